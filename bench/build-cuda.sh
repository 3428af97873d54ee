#!/usr/bin/env bash
# Builds `seq2seq` with candle's CUDA backend (`--features cuda`) on a machine with no CUDA toolkit
# and no GPU: NVIDIA's compiler, headers and libraries come from PyPI wheels, pinned to CUDA 13.0
# (the GPU machine's driver; newer PTX would not load on it), and the driver library the link step
# wants is a stub generated from the symbols cudarc uses (the real libcuda.so.1 is the GPU
# machine's, found at run time).
#
#   bench/build-cuda.sh [COMPUTE_CAP]     # default 90 (Hopper: H100, H200)
#
# Output: target/cuda/release/seq2seq, and on stdout the shared libraries it needs at run time
# (ship target/cuda-lib with it, and point LD_LIBRARY_PATH there).
set -euo pipefail
cd "$(dirname "$0")/.."
CAP=${1:-90}
VENV=target/cuda-venv
if [ ! -x "$VENV/bin/nvcc-ok" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "nvidia-cuda-nvcc~=13.0.0" "nvidia-cuda-runtime~=13.0.0" \
    "nvidia-cuda-nvrtc~=13.0.0" "nvidia-cublas>=13.0,<13.1" "nvidia-curand~=10.4.0" \
    "nvidia-cuda-cccl~=13.0.0" "nvidia-nvvm~=13.0.0" "nvidia-cuda-crt~=13.0.0"
  touch "$VENV/bin/nvcc-ok"
  chmod +x "$VENV/bin/nvcc-ok"
fi
NV=$(ls -d "$PWD/$VENV"/lib/python3*/site-packages/nvidia/cu13)
"$NV/bin/nvcc" --version | tail -1

# The wheels ship versioned libraries only (libcublas.so.13): the linker wants the plain names.
LIB=$PWD/target/cuda-lib
mkdir -p "$LIB"
for so in cudart cublas cublasLt nvrtc curand; do
  ln -sf "$(ls "$NV"/lib/lib$so.so.* | head -1)" "$LIB/lib$so.so"
done

export CUDA_ROOT=$NV CUDA_PATH=$NV CUDA_HOME=$NV PATH=$NV/bin:$PATH CUDA_COMPUTE_CAP=$CAP
export LIBRARY_PATH=$LIB:$NV/lib LD_LIBRARY_PATH=$LIB:$NV/lib
build() { cargo build --release --target-dir target/cuda "$@"; }

# The driver stub: every cu* driver symbol cudarc calls, exported under the driver's soname.
if [ ! -f "$LIB/libcuda.so" ]; then
  build -p seq2seq-pipeline --features cuda
  RLIB=$(ls target/cuda/release/deps/libcudarc-*.rlib | head -1)
  nm "$RLIB" 2>/dev/null | awk '$1=="U" && $2 ~ /^cu[A-Z]/ {print "void " $2 "(void) {}"}' |
    sort -u > "$LIB/cuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$LIB/libcuda.so" "$LIB/cuda_stub.c"
  echo "driver stub: $(wc -l < "$LIB/cuda_stub.c") symbols"
fi

build --features cuda
BIN=target/cuda/release/seq2seq
echo "built $BIN; it needs at run time:"
ldd "$BIN" | awk '/cuda|cublas|nvrtc|curand/ {print "  " $1}'
for so in cudart cublas cublasLt nvrtc curand; do
  cp -L "$(ls "$NV"/lib/lib$so.so.* | head -1)" "$LIB/" 2>/dev/null || true
done
echo "(copies of the toolkit's in target/cuda-lib; the driver's libcuda.so.1 is the GPU machine's)"
