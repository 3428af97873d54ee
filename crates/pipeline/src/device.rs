//! Where models run: `cpu`, `cuda`, `cuda:N` or `auto` — the config's `device:` key and every
//! command's `--device`. CUDA needs a binary built with the `cuda` feature
//! (`bench/build-cuda.sh`); the default build is CPU-only, and asking it for a GPU is an error
//! that says so. Checkpoints are device-independent: tensors are saved from, and loaded to,
//! whichever device.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A device as configured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The first GPU when the binary has CUDA and one is visible, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// The GPU of this ordinal (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("{s:?}: expected cpu, cuda, cuda:N or auto");
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(bad),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Serialize for DeviceChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for DeviceChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Whether this binary was built with CUDA.
pub fn has_cuda() -> bool {
    candle_core::utils::cuda_is_available()
}

impl DeviceChoice {
    /// The device itself: a GPU that cannot be had is an error naming why; `auto` falls back
    /// to the CPU.
    pub fn resolve(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Auto if has_cuda() => Ok(Device::new_cuda(0).unwrap_or(Device::Cpu)),
            Self::Auto => Ok(Device::Cpu),
            Self::Cuda(n) if !has_cuda() => Err(Error::Device(format!(
                "cuda:{n}: this seq2seq was built without CUDA; build it with `--features cuda` \
                 (bench/build-cuda.sh), or use --device cpu"
            ))),
            Self::Cuda(n) => {
                Device::new_cuda(n).map_err(|e| Error::Device(format!("cuda:{n}: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_print_and_resolve() {
        for (s, d) in [
            ("auto", DeviceChoice::Auto),
            ("cpu", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda(0)),
            ("cuda:3", DeviceChoice::Cuda(3)),
        ] {
            assert_eq!(s.parse::<DeviceChoice>(), Ok(d));
        }
        assert_eq!(DeviceChoice::Cuda(2).to_string(), "cuda:2");
        for bad in ["cuda:", "cuda:x", "tpu", ""] {
            let e = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(e.contains("expected cpu, cuda, cuda:N or auto"), "{e}");
        }
        assert!(DeviceChoice::Cpu.resolve().unwrap().is_cpu());
        if !has_cuda() {
            assert!(DeviceChoice::Auto.resolve().unwrap().is_cpu());
            let e = DeviceChoice::Cuda(0).resolve().unwrap_err().to_string();
            assert!(e.contains("built without CUDA"), "{e}");
        }
    }
}
