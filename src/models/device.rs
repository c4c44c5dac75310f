//! Which device the models run on, from a config string.

use std::fmt;
use std::str::FromStr;

/// A device choice as written in the config: `auto`, `cpu` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// CUDA device 0 when libtorch sees one, else the CPU.
    Auto,
    /// Always the CPU.
    Cpu,
    /// A specific CUDA device.
    Cuda(usize),
}

/// Why a device string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// Not one of the accepted spellings.
    #[error("unknown device {0:?}: expected \"auto\", \"cpu\" or \"cuda:N\"")]
    Unknown(String),
    /// `cuda:` followed by something that is not a device index.
    #[error("bad CUDA device index in {0:?}: expected a non-negative integer after \"cuda:\"")]
    BadIndex(String),
    /// The named CUDA device does not exist on this machine.
    #[error("CUDA device {index} requested but libtorch sees {available} CUDA device(s)")]
    Unavailable {
        /// Requested index.
        index: usize,
        /// Devices libtorch reports.
        available: usize,
    },
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => match t.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .map(Self::Cuda)
                    .map_err(|_| DeviceError::BadIndex(s.to_string())),
                None => Err(DeviceError::Unknown(s.to_string())),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// The libtorch device; a missing CUDA device is an error rather than a silent CPU fallback,
    /// because an explicit `cuda:N` in the config means the operator expects that GPU.
    pub fn resolve(self) -> Result<tch::Device, DeviceError> {
        match self {
            Self::Auto => Ok(tch::Device::cuda_if_available()),
            Self::Cpu => Ok(tch::Device::Cpu),
            Self::Cuda(index) => {
                let available = if tch::Cuda::is_available() {
                    usize::try_from(tch::Cuda::device_count()).unwrap_or(0)
                } else {
                    0
                };
                if index < available {
                    Ok(tch::Device::Cuda(index))
                } else {
                    Err(DeviceError::Unavailable { index, available })
                }
            }
        }
    }
}

/// Parses and resolves a device string in one step.
pub fn device_from_config(s: &str) -> Result<tch::Device, DeviceError> {
    s.parse::<DeviceSpec>()?.resolve()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_accepted_spellings() {
        assert_eq!("auto".parse::<DeviceSpec>(), Ok(DeviceSpec::Auto));
        assert_eq!(" CPU ".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda:3".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(3)));
        assert_eq!("cuda".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn rejects_bad_strings_with_typed_errors() {
        assert!(matches!(
            "gpu".parse::<DeviceSpec>(),
            Err(DeviceError::Unknown(_))
        ));
        assert!(matches!(
            "cuda:x".parse::<DeviceSpec>(),
            Err(DeviceError::BadIndex(_))
        ));
        assert!(matches!(
            "cuda:-1".parse::<DeviceSpec>(),
            Err(DeviceError::BadIndex(_))
        ));
        assert!(matches!(
            "".parse::<DeviceSpec>(),
            Err(DeviceError::Unknown(_))
        ));
    }

    #[test]
    fn resolves_cpu_and_auto() {
        assert_eq!(DeviceSpec::Cpu.resolve(), Ok(tch::Device::Cpu));
        let auto = DeviceSpec::Auto.resolve().unwrap();
        assert_eq!(auto.is_cuda(), tch::Cuda::is_available());
        let missing = DeviceSpec::Cuda(1000).resolve();
        assert!(matches!(
            missing,
            Err(DeviceError::Unavailable { index: 1000, .. })
        ));
    }
}
