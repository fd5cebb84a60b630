//! Where the guest kernel, the agent initramfs and runv-vmm are, and the default VM size.
//!
//! Order, for each of `kernel`, `initrd`, `vmm`: the environment (`RUNV_KERNEL`,
//! `RUNV_INITRD`, `RUNV_VMM`), then the config file, then the install location:
//! runv-vmm next to the runv binary, the kernel and initrd in
//! `<prefix>/share/runv/{vmlinux,runv-initrd.img}` with prefix = the binary's dir/..
//! The config file is `--config`, else `RUNV_CONFIG`, else `/etc/runv/config.toml`
//! (only the last may be missing).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The default config file.
pub const DEFAULT_CONFIG: &str = "/etc/runv/config.toml";
/// vCPUs when neither annotations nor limits say.
pub const DEFAULT_CPUS: u32 = 1;
/// Guest memory (MiB) when neither annotations nor limits say.
pub const DEFAULT_MEMORY_MIB: u32 = 256;
/// The most of a guest's console output kept in `<root>/<id>/console.log`.
pub const DEFAULT_CONSOLE_LIMIT: u64 = 1024 * 1024;
/// The smallest `console_limit` accepted (room for a kernel panic's trace).
const MIN_CONSOLE_LIMIT: u64 = 4096;
/// Host memory (MiB) a sandbox's cgroup may use beyond its guest RAM: runv-vmm (about
/// 4 MiB), its shims (about 1 MiB each), KVM's page tables, and the host page cache and
/// tmpfs pages its share writes (see docs/security.md for the measurement).
pub const DEFAULT_HOST_MEMORY_OVERHEAD_MIB: u64 = 64;
/// Host tasks a sandbox's cgroup may hold besides one per vCPU: runv-vmm's threads and
/// processes (about 9 with one vCPU) and two per running exec's shim.
pub const DEFAULT_HOST_PIDS_LIMIT: u64 = 256;

const BUILD_KERNEL: &str = "build it with guest-kernel/build.sh (prints the vmlinux path) and \
     set RUNV_KERNEL or `kernel` in the config file";
const BUILD_INITRD: &str = "build it with `source scripts/lib.sh; build_initramfs \
     \"$(agent/build.sh)\" agent` (prints the path) and set RUNV_INITRD or `initrd` in the config file";
const BUILD_VMM: &str = "build it with `cargo build --release -p runv-vmm` and install it next to \
     runv, or set RUNV_VMM or `vmm` in the config file";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("config file {}: {key} = {value}: must be at least {min}", path.display())]
    TooSmall {
        path: PathBuf,
        key: &'static str,
        value: u64,
        min: u64,
    },
    #[error("{what} not found; tried {}; {hint}", tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    Missing {
        what: &'static str,
        tried: Vec<PathBuf>,
        hint: &'static str,
    },
}

/// The config file's contents; every key optional.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub vmm: Option<PathBuf>,
    pub default_cpus: Option<u32>,
    pub default_memory_mib: Option<u32>,
    /// Bytes of guest console output kept per sandbox (the rest is discarded).
    pub console_limit: Option<u64>,
    /// MiB of host memory a sandbox's cgroup may use beyond its guest RAM.
    pub host_memory_overhead_mib: Option<u64>,
    /// Host tasks a sandbox's cgroup may hold besides one per vCPU.
    pub host_pids_limit: Option<u64>,
}

impl ConfigFile {
    /// Reads `path`; with `optional`, a missing file is an empty config.
    pub fn load(path: &Path, optional: bool) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default())
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.into(),
                    source,
                })
            }
        };
        let file: ConfigFile = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            source: Box::new(e),
        })?;
        for (key, value, min) in [
            ("default_cpus", file.default_cpus.map(u64::from), 1),
            (
                "default_memory_mib",
                file.default_memory_mib.map(u64::from),
                64,
            ),
            ("console_limit", file.console_limit, MIN_CONSOLE_LIMIT),
            (
                "host_memory_overhead_mib",
                file.host_memory_overhead_mib,
                16,
            ),
            ("host_pids_limit", file.host_pids_limit, 32),
        ] {
            if let Some(v) = value.filter(|v| *v < min) {
                return Err(ConfigError::TooSmall {
                    path: path.into(),
                    key,
                    value: v,
                    min,
                });
            }
        }
        Ok(file)
    }
}

/// What the runtime needs, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub vmm: PathBuf,
    pub default_cpus: u32,
    pub default_memory_mib: u32,
    pub console_limit: u64,
    pub host_memory_overhead_mib: u64,
    pub host_pids_limit: u64,
}

/// The inputs of [`resolve`], so that tests need not touch the process environment.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `--config`.
    pub flag: Option<PathBuf>,
    /// `RUNV_CONFIG`.
    pub env_config: Option<PathBuf>,
    pub env_kernel: Option<PathBuf>,
    pub env_initrd: Option<PathBuf>,
    pub env_vmm: Option<PathBuf>,
    /// The running binary (for install-location defaults).
    pub exe: Option<PathBuf>,
    /// The default config file path (tests point it elsewhere).
    pub default_config: PathBuf,
}

impl Sources {
    /// From the process environment.
    pub fn from_env(flag: Option<PathBuf>) -> Self {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Sources {
            flag,
            env_config: var("RUNV_CONFIG"),
            env_kernel: var("RUNV_KERNEL"),
            env_initrd: var("RUNV_INITRD"),
            env_vmm: var("RUNV_VMM"),
            exe: std::env::current_exe().ok(),
            default_config: PathBuf::from(DEFAULT_CONFIG),
        }
    }
}

/// Resolves every path and checks that each file exists.
pub fn resolve(src: &Sources) -> Result<RuntimeConfig, ConfigError> {
    let file = match (&src.flag, &src.env_config) {
        (Some(p), _) | (None, Some(p)) => ConfigFile::load(p, false)?,
        (None, None) => ConfigFile::load(&src.default_config, true)?,
    };
    let bin_dir = src.exe.as_deref().and_then(Path::parent);
    let share = bin_dir
        .and_then(Path::parent)
        .map(|prefix| prefix.join("share/runv"));
    let kernel = pick(
        "guest kernel",
        [&src.env_kernel, &file.kernel],
        share.as_ref().map(|s| s.join("vmlinux")),
        BUILD_KERNEL,
    )?;
    let initrd = pick(
        "agent initramfs",
        [&src.env_initrd, &file.initrd],
        share.as_ref().map(|s| s.join("runv-initrd.img")),
        BUILD_INITRD,
    )?;
    let mut vmm_default = bin_dir.map(|d| d.join("runv-vmm"));
    if !vmm_default.as_ref().is_some_and(|p| p.is_file()) {
        if let Some(found) = search_path("runv-vmm") {
            vmm_default = Some(found);
        }
    }
    let vmm = pick(
        "runv-vmm",
        [&src.env_vmm, &file.vmm],
        vmm_default,
        BUILD_VMM,
    )?;
    Ok(RuntimeConfig {
        kernel,
        initrd,
        vmm,
        default_cpus: file.default_cpus.unwrap_or(DEFAULT_CPUS),
        default_memory_mib: file.default_memory_mib.unwrap_or(DEFAULT_MEMORY_MIB),
        console_limit: file.console_limit.unwrap_or(DEFAULT_CONSOLE_LIMIT),
        host_memory_overhead_mib: file
            .host_memory_overhead_mib
            .unwrap_or(DEFAULT_HOST_MEMORY_OVERHEAD_MIB),
        host_pids_limit: file.host_pids_limit.unwrap_or(DEFAULT_HOST_PIDS_LIMIT),
    })
}

/// The first explicit choice wins (and must exist); else the default, if it exists.
fn pick(
    what: &'static str,
    explicit: [&Option<PathBuf>; 2],
    default: Option<PathBuf>,
    hint: &'static str,
) -> Result<PathBuf, ConfigError> {
    let chosen = explicit.into_iter().flatten().next().cloned();
    let candidate = chosen.or(default);
    match candidate {
        Some(p) if p.is_file() => Ok(p),
        Some(p) => Err(ConfigError::Missing {
            what,
            tried: vec![p],
            hint,
        }),
        None => Err(ConfigError::Missing {
            what,
            tried: vec![],
            hint,
        }),
    }
}

fn search_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn install_location_defaults() {
        let t = tempfile::tempdir().unwrap();
        let prefix = t.path();
        touch(&prefix.join("bin/runv"));
        touch(&prefix.join("bin/runv-vmm"));
        touch(&prefix.join("share/runv/vmlinux"));
        touch(&prefix.join("share/runv/runv-initrd.img"));
        let src = Sources {
            exe: Some(prefix.join("bin/runv")),
            default_config: prefix.join("absent.toml"),
            ..Default::default()
        };
        let c = resolve(&src).unwrap();
        assert_eq!(c.kernel, prefix.join("share/runv/vmlinux"));
        assert_eq!(c.initrd, prefix.join("share/runv/runv-initrd.img"));
        assert_eq!(c.vmm, prefix.join("bin/runv-vmm"));
        assert_eq!((c.default_cpus, c.default_memory_mib), (1, 256));
    }

    #[test]
    fn env_beats_file_beats_default() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        for f in ["k-env", "k-file", "i-file", "v-file", "bin/runv"] {
            touch(&d.join(f));
        }
        let cfg = d.join("c.toml");
        std::fs::write(
            &cfg,
            format!(
                "kernel = \"{0}/k-file\"\ninitrd = \"{0}/i-file\"\nvmm = \"{0}/v-file\"\ndefault_cpus = 2\ndefault_memory_mib = 512\n",
                d.display()
            ),
        )
        .unwrap();
        let src = Sources {
            env_config: Some(cfg),
            env_kernel: Some(d.join("k-env")),
            exe: Some(d.join("bin/runv")),
            default_config: d.join("absent.toml"),
            ..Default::default()
        };
        let c = resolve(&src).unwrap();
        assert_eq!(c.kernel, d.join("k-env"));
        assert_eq!(c.initrd, d.join("i-file"));
        assert_eq!(c.vmm, d.join("v-file"));
        assert_eq!((c.default_cpus, c.default_memory_mib), (2, 512));
    }

    #[test]
    fn missing_kernel_names_the_path_and_how_to_build() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        touch(&d.join("bin/runv"));
        let src = Sources {
            exe: Some(d.join("bin/runv")),
            default_config: d.join("absent.toml"),
            ..Default::default()
        };
        let e = resolve(&src).unwrap_err().to_string();
        assert!(e.contains("guest kernel not found"), "{e}");
        assert!(
            e.contains(&d.join("share/runv/vmlinux").display().to_string()),
            "{e}"
        );
        assert!(e.contains("guest-kernel/build.sh"), "{e}");
    }

    #[test]
    fn explicit_config_must_exist_and_parse() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        let src = Sources {
            flag: Some(d.join("nope.toml")),
            default_config: d.join("absent.toml"),
            ..Default::default()
        };
        let e = resolve(&src).unwrap_err().to_string();
        assert!(e.contains("nope.toml"), "{e}");
        std::fs::write(d.join("bad.toml"), "kernal = \"/x\"\n").unwrap();
        let e = ConfigFile::load(&d.join("bad.toml"), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("kernal"), "{e}");
        std::fs::write(d.join("small.toml"), "default_memory_mib = 8\n").unwrap();
        let e = ConfigFile::load(&d.join("small.toml"), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("default_memory_mib = 8"), "{e}");
        std::fs::write(d.join("console.toml"), "console_limit = 100\n").unwrap();
        let e = ConfigFile::load(&d.join("console.toml"), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("console_limit = 100: must be at least 4096"),
            "{e}"
        );
        std::fs::write(d.join("console.toml"), "console_limit = 65536\n").unwrap();
        let f = ConfigFile::load(&d.join("console.toml"), false).unwrap();
        assert_eq!(f.console_limit, Some(65536));
        for (text, msg) in [
            (
                "host_memory_overhead_mib = 8\n",
                "host_memory_overhead_mib = 8: must be at least 16",
            ),
            (
                "host_pids_limit = 4\n",
                "host_pids_limit = 4: must be at least 32",
            ),
        ] {
            std::fs::write(d.join("host.toml"), text).unwrap();
            let e = ConfigFile::load(&d.join("host.toml"), false)
                .unwrap_err()
                .to_string();
            assert!(e.contains(msg), "{e}");
        }
        std::fs::write(
            d.join("host.toml"),
            "host_memory_overhead_mib = 96\nhost_pids_limit = 100\n",
        )
        .unwrap();
        let f = ConfigFile::load(&d.join("host.toml"), false).unwrap();
        assert_eq!(
            (f.host_memory_overhead_mib, f.host_pids_limit),
            (Some(96), Some(100))
        );
    }
}
