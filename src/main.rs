//! The `seq2seq` binary: the allocator, then the command line (`seq2seq-cli`).

/// Training frees and reallocates the same large tensors every step; glibc's allocator returns
/// them to the system and page-faults them back in. mimalloc, told to purge only memory unused
/// for ten seconds (see `main`), keeps them from one step to the next (measurements:
/// docs/results.md, "Allocator" and "Page faults, SSE2 kernels and the per-step
/// products").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 2's `mi_option_e`.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> std::process::ExitCode {
    // Purge after 10 s rather than mimalloc's 10 ms, unless the user chose otherwise with
    // mimalloc's own variable. mimalloc purges what is free at each sweep, so with 1 s about
    // every other training step faulted its buffers back in as fresh zeroed pages (~10 % of a
    // profile); 10 s trades ~20-30 MiB of peak memory for those faults.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide allocator option before any other thread exists.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10_000) };
    }
    seq2seq_cli::main()
}
