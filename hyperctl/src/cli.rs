//! hyperctl's command line: docker-like verbs over runv. One variant per verb (see
//! docs/hyperctl.md).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The state directory when `--root` is not given.
pub const DEFAULT_ROOT: &str = "/var/lib/hyperctl";

#[derive(Debug, Parser)]
#[command(
    name = "hyperctl",
    version,
    about = "hyperctl: run container images in KVM micro-VMs, no daemon"
)]
pub struct Cli {
    /// State directory: images/ (the image store), containers/, runv/ (runv's --root)
    #[arg(long, global = true, default_value = DEFAULT_ROOT)]
    pub root: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in a new container, in its own VM
    Run(Box<RunArgs>),
    /// Import an image archive (docker-archive or OCI tarball) or an OCI layout into the store
    Load {
        /// The archive or layout directory
        #[arg(short, long)]
        input: PathBuf,
    },
    /// Pull an image from a registry into the store
    Pull {
        /// Use plain HTTP for the registry (a local test registry), not HTTPS
        #[arg(long)]
        insecure: bool,
        /// Platform to pick from a multi-platform image, OS/ARCH[/VARIANT] (default: linux/<host arch>)
        #[arg(long)]
        platform: Option<String>,
        /// NAME[:TAG|@DIGEST], e.g. busybox, localhost:5000/app:v1
        image: String,
    },
    /// List the images in the store
    Images,
    /// Remove an image from the store (refused while a container uses it)
    Rmi { image: String },
    /// List containers (running ones; -a: all)
    Ps {
        /// Show all containers, also stopped ones
        #[arg(short, long)]
        all: bool,
    },
    /// Print the output of a detached container
    Logs { name: String },
    /// Stop a container: SIGTERM, then SIGKILL after the grace period
    Stop {
        /// Seconds to wait for the container to exit before killing it
        #[arg(short = 't', long = "time", default_value_t = 10)]
        time: u64,
        name: String,
    },
    /// Remove a container (and its VM, bundle and log)
    Rm {
        /// Remove a running container too (killing it)
        #[arg(short, long)]
        force: bool,
        name: String,
    },
    /// The background half of `run -d --rm` (started by hyperctl itself)
    #[command(name = "__autoremove", hide = true)]
    Autoremove { name: String },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// Give the container a terminal
    #[arg(short = 't', long = "tty")]
    pub tty: bool,
    /// Keep stdin open and pass it to the container
    #[arg(short = 'i', long = "interactive")]
    pub interactive: bool,
    /// Run in the background and print the container's name
    #[arg(short = 'd', long = "detach")]
    pub detach: bool,
    /// vCPUs of the VM
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub cpus: Option<u32>,
    /// Memory of the VM in MiB
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub memory: Option<u32>,
    /// Set an environment variable (KEY=VALUE)
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container (absolute)
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// User (name, uid, name:group or uid:gid)
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Bind mount HOST:CONTAINER[:ro|rw] (both absolute)
    #[arg(short = 'v', long = "volume")]
    pub volumes: Vec<String>,
    /// Container name (default: generated)
    #[arg(long)]
    pub name: Option<String>,
    /// Replace the image's entrypoint
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// IMAGE (a name in the store, an OCI layout directory or an archive file), then the
    /// command and its arguments (default: the image's); flags after IMAGE are the command's
    #[arg(
        required = true,
        trailing_var_arg = true,
        value_name = "IMAGE [COMMAND [ARG...]]"
    )]
    pub argv: Vec<String>,
}

impl RunArgs {
    /// The image argument.
    pub fn image(&self) -> &str {
        &self.argv[0]
    }

    /// The command after the image (empty: the image's).
    pub fn command(&self) -> &[String] {
        &self.argv[1..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("hyperctl").chain(args.iter().copied()))
    }

    fn run_args(args: &[&str]) -> RunArgs {
        match parse(args).unwrap().command {
            Command::Run(r) => *r,
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn run_flags_and_command() {
        let r = run_args(&[
            "run",
            "--rm",
            "-ti",
            "--cpus",
            "2",
            "--memory",
            "512",
            "-e",
            "A=1",
            "-e",
            "B=2",
            "-w",
            "/tmp",
            "-u",
            "nobody",
            "-v",
            "/a:/b:ro",
            "-v",
            "/c:/d",
            "--name",
            "web",
            "busybox",
            "sh",
            "-c",
            "echo -n hi",
        ]);
        assert!(r.rm && r.tty && r.interactive && !r.detach);
        assert_eq!((r.cpus, r.memory), (Some(2), Some(512)));
        assert_eq!(r.env, ["A=1", "B=2"]);
        assert_eq!(r.workdir.as_deref(), Some("/tmp"));
        assert_eq!(r.user.as_deref(), Some("nobody"));
        assert_eq!(r.volumes, ["/a:/b:ro", "/c:/d"]);
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.image(), "busybox");
        // Flags after the image belong to the command, as with docker run.
        assert_eq!(r.command(), ["sh", "-c", "echo -n hi"]);
    }

    #[test]
    fn flags_after_the_image_go_to_the_command() {
        let r = run_args(&["run", "img", "--rm", "-e", "X=1"]);
        assert!(!r.rm);
        assert!(r.env.is_empty());
        assert_eq!(r.command(), ["--rm", "-e", "X=1"]);
    }

    #[test]
    fn defaults() {
        let c = parse(&["run", "busybox"]).unwrap();
        assert_eq!(c.root, PathBuf::from(DEFAULT_ROOT));
        let Command::Run(r) = c.command else { panic!() };
        assert!(r.command().is_empty() && r.name.is_none() && r.cpus.is_none());
        let c = parse(&["--root", "/x", "stop", "n"]).unwrap();
        assert_eq!(c.root, PathBuf::from("/x"));
        assert!(matches!(c.command, Command::Stop { time: 10, .. }));
        let c = parse(&["stop", "-t", "3", "n"]).unwrap();
        assert!(matches!(c.command, Command::Stop { time: 3, ref name } if name == "n"));
        assert!(matches!(
            parse(&["ps", "-a"]).unwrap().command,
            Command::Ps { all: true }
        ));
        assert!(matches!(
            parse(&["rm", "-f", "x"]).unwrap().command,
            Command::Rm { force: true, .. }
        ));
        let c = parse(&["pull", "--insecure", "127.0.0.1:5000/x:t"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Pull { insecure: true, platform: None, ref image } if image == "127.0.0.1:5000/x:t"
        ));
        let c = parse(&["pull", "--platform", "linux/arm64", "busybox"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Pull { insecure: false, platform: Some(ref p), .. } if p == "linux/arm64"
        ));
        let c = parse(&["load", "-i", "/t.tar"]).unwrap();
        assert!(
            matches!(c.command, Command::Load { ref input } if input == &PathBuf::from("/t.tar"))
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        for bad in [
            &["run"][..],
            &["run", "--cpus", "0", "busybox"],
            &["run", "--bogus", "busybox"],
            &["run", "-e"],
            &["run", "--cpus", "x", "busybox"],
            &["run", "--memory", "0", "busybox"],
            &["run", "--memory", "-5", "busybox"],
            &["stop"],
            &["stop", "-t", "soon", "x"],
            &["rm"],
            &["load"],
            &["pull"],
            &["pull", "--platform"],
            &["pull", "a", "b"],
            &["frobnicate"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
