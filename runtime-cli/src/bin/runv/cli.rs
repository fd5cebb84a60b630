//! runc's command line: the same verbs, flags and short forms (runc 1.1), plus
//! runv's `--config`. Flags runc accepts that mean nothing in a VM are accepted and
//! ignored (each says so in its help).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "runv",
    version = concat!("version ", env!("CARGO_PKG_VERSION"), "\nspec: 1.1.0"),
    about = "runv: an OCI runtime that runs each container in its own KVM micro-VM",
    disable_help_subcommand = false
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct GlobalOpts {
    /// Root directory for container state
    #[arg(long, global = true, default_value = runv_runtime::state::DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Log file (errors and warnings; default: stderr)
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Log format: text or json
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Debug logging
    #[arg(long, global = true)]
    pub debug: bool,
    /// runv's config file (default: $RUNV_CONFIG, else /etc/runv/config.toml)
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Accepted and ignored (runv makes no systemd units)
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// Accepted and ignored (no checkpoint/restore)
    #[arg(long, global = true)]
    pub criu: Option<String>,
    /// Accepted and ignored (true, false or auto); `spec --rootless` writes a rootless config
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true")]
    pub rootless: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct CreateArgs {
    /// Path to the root of the bundle directory
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// AF_UNIX socket that receives the master end of the console's pseudoterminal
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// File to write the process id to (the container init's runv-shim)
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Accepted and ignored (the guest agent sets up the rootfs)
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted and ignored
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Accepted; extra fds cannot cross into the VM, so a non-zero value is refused
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// The container id
    pub id: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container
    Create(CreateArgs),
    /// Start a created container
    Start { id: String },
    /// Create and start a container, and wait for it (unless --detach)
    Run {
        /// Detach from the container's process
        #[arg(short, long)]
        detach: bool,
        /// Do not delete the container after it exits (foreground run)
        #[arg(long)]
        keep: bool,
        #[command(flatten)]
        create: CreateArgs,
    },
    /// Output the state of a container
    State { id: String },
    /// Send a signal (default SIGTERM) to the container's init process
    Kill {
        /// Send the signal to all processes of the container
        #[arg(short, long)]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Delete a container and its sandbox VM
    Delete {
        /// Kill the container if it is still running
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Execute a new process inside the container
    Exec(Box<ExecArgs>),
    /// Display the processes running inside a container (guest PIDs)
    Ps {
        #[arg(short, long, value_enum, default_value = "table")]
        format: ListFormat,
        id: String,
        /// ps options: only `-ef` (the default); the processes are read from the guest
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// List containers
    #[command(alias = "ls")]
    List {
        #[arg(short, long, value_enum, default_value = "table")]
        format: ListFormat,
        /// Display only container ids
        #[arg(short, long)]
        quiet: bool,
    },
    /// Suspend all processes of the container
    Pause { id: String },
    /// Resume all processes of a paused container
    Resume { id: String },
    /// Display container events (resource statistics)
    Events {
        /// Display the statistics once and exit
        #[arg(long)]
        stats: bool,
        /// Interval between statistics, e.g. 5s, 500ms
        #[arg(long, default_value = "5s")]
        interval: String,
        id: String,
    },
    /// Update container resource constraints
    Update(Box<UpdateArgs>),
    /// Show the enabled features
    Features,
    /// Check that runv can run sandboxes on this host (KVM, guest kernel and initramfs,
    /// cgroups, host networking, the state root); exit 0 only if it can
    Check,
    /// Create a new specification file (config.json)
    Spec {
        /// Path to the root of the bundle directory (with the global --rootless:
        /// a configuration for a rootless container)
        #[arg(short, long)]
        bundle: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// AF_UNIX socket that receives the master end of the console's pseudoterminal
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Current working directory in the container
    #[arg(long)]
    pub cwd: Option<String>,
    /// Set environment variables (KEY=VALUE)
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// UID (format: <uid>[:<gid>])
    #[arg(short, long)]
    pub user: Option<String>,
    /// Additional gids
    #[arg(short = 'g', long)]
    pub additional_gids: Vec<u32>,
    /// Path to the process.json
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Detach from the container's process
    #[arg(short, long)]
    pub detach: bool,
    /// File to write the process id to (the process's runv-shim)
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Accepted and ignored (no SELinux in the guest)
    #[arg(long)]
    pub process_label: Option<String>,
    /// Accepted and ignored (no AppArmor in the guest)
    #[arg(long)]
    pub apparmor: Option<String>,
    /// Set the no new privileges value for the process
    #[arg(long)]
    pub no_new_privs: bool,
    /// Add a capability to the bounding set for the process
    #[arg(short, long)]
    pub cap: Vec<String>,
    /// Accepted; a non-zero value is refused (fds cannot cross into the VM)
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// Accepted and ignored (the guest has one cgroup per container)
    #[arg(long)]
    pub cgroup: Vec<String>,
    /// Allow exec in a paused container
    #[arg(long)]
    pub ignore_paused: bool,
    pub id: String,
    /// The command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Path to a JSON file of LinuxResources, or - for stdin
    #[arg(short, long)]
    pub resources: Option<String>,
    /// Memory limit (in bytes, or with k/m/g suffix)
    #[arg(long)]
    pub memory: Option<String>,
    /// Total memory usage (memory + swap); -1 for unlimited
    #[arg(long)]
    pub memory_swap: Option<String>,
    /// Memory reservation (soft limit)
    #[arg(long)]
    pub memory_reservation: Option<String>,
    /// CPU shares (relative weight)
    #[arg(long)]
    pub cpu_shares: Option<u64>,
    /// CPU CFS quota in microseconds
    #[arg(long)]
    pub cpu_quota: Option<i64>,
    /// CPU CFS period in microseconds
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CPUs to use (0-3, 0,1)
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes to use
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Maximum number of pids; -1 for unlimited
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Block IO weight (10-1000)
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("runv").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn containerds_create_line() {
        let c = parse(&[
            "--root",
            "/run/containerd/runc/default",
            "--log",
            "/x/log.json",
            "--log-format",
            "json",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/b/init.pid",
            "c1",
        ]);
        assert_eq!(c.global.log_format, LogFormat::Json);
        match c.command {
            Command::Create(a) => {
                assert_eq!(a.bundle, PathBuf::from("/b"));
                assert_eq!(a.pid_file, Some(PathBuf::from("/b/init.pid")));
                assert_eq!(a.id, "c1");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn kill_exec_delete_forms() {
        match parse(&["kill", "--all", "c1", "KILL"]).command {
            Command::Kill { all, id, signal } => {
                assert!(all);
                assert_eq!((id.as_str(), signal.as_deref()), ("c1", Some("KILL")));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["delete", "-f", "c1"]).command {
            Command::Delete { force, .. } => assert!(force),
            other => panic!("{other:?}"),
        }
        match parse(&[
            "exec",
            "-t",
            "-e",
            "A=1",
            "--user",
            "1000:1000",
            "c1",
            "sh",
            "-c",
            "echo -n",
        ])
        .command
        {
            Command::Exec(e) => {
                assert!(e.tty);
                assert_eq!(e.env, ["A=1"]);
                assert_eq!(e.command, ["sh", "-c", "echo -n"]);
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "--systemd-cgroup",
            "--rootless",
            "false",
            "run",
            "-d",
            "-b",
            "/b",
            "c1",
        ])
        .command
        {
            Command::Run { detach, create, .. } => {
                assert!(detach);
                assert_eq!(create.bundle, PathBuf::from("/b"));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["update", "--pids-limit", "-1", "--memory", "64m", "c1"]).command {
            Command::Update(u) => assert_eq!(u.pids_limit, Some(-1)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn spec_rootless() {
        let c = parse(&["spec", "--rootless", "-b", "/x"]);
        assert_eq!(c.global.rootless.as_deref(), Some("true"));
        assert!(matches!(c.command, Command::Spec { .. }));
        let c = parse(&["spec"]);
        assert_eq!(c.global.rootless, None);
    }

    #[test]
    fn missing_id_is_a_usage_error() {
        assert!(Cli::try_parse_from(["runv", "state"]).is_err());
        assert!(Cli::try_parse_from(["runv", "kill"]).is_err());
        assert!(Cli::try_parse_from(["runv", "--log-format", "xml", "list"]).is_err());
    }
}
