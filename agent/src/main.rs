//! runv-agent: the guest's PID 1, which creates OCI containers for the host.
//!
//! In the guest (PID 1, or `--listen vsock`) it mounts the early file systems, logs to
//! the serial console and serves the agent protocol on vsock. On a host,
//! `runv-agent --listen unix:PATH --state-dir DIR` serves the same protocol on a Unix
//! socket, which is how its container logic is tested without a VM. docs/agent.md.

mod builder;
mod cgroup;
mod containers;
mod network;
mod pid1;
mod procinfo;
mod reaper;
mod stdio;
mod sysctl;
mod transport;
mod validate;

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use runv_agent_protocol::{ErrorResponse, Request, Response, Server, SUPPORTED_VERSIONS};

use containers::{Manager, Paths};
use transport::{ListenAddr, Listener, StdioConnector, Stream};

const SOFTWARE: &str = concat!("runv-agent ", env!("CARGO_PKG_VERSION"));

#[derive(Parser, Debug)]
#[command(
    version,
    about = "runv's guest agent: creates OCI containers for the host"
)]
struct Args {
    /// unix:PATH (host mode), vsock or vsock:PORT. Default: vsock as PID 1.
    #[arg(long)]
    listen: Option<ListenAddr>,
    /// State: libcontainer's container directories and the bundles.
    #[arg(long, default_value = "/run/runv-agent")]
    state_dir: PathBuf,
    /// Where share tags live (`<dir>/<tag>/<subpath>` is a rootfs location).
    #[arg(long, default_value = runv_agent_protocol::GUEST_SHARE_ROOT)]
    share_dir: PathBuf,
    /// Host mode: stdio port P is the Unix socket `<base>_<P>` (default: the listen path).
    #[arg(long)]
    stdio_base: Option<PathBuf>,
}

struct Agent {
    manager: Manager,
    network: network::Network,
    pid1: bool,
    share_dir: PathBuf,
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some(builder::BUILDER_ARG) {
        init_logging(false);
        builder::serve();
    }
    let pid1 = std::process::id() == 1;
    // Before anything else mounts: the mounts must be made on the new root.
    let reroot = if pid1 {
        pid1::leave_initramfs()
    } else {
        Ok(())
    };
    init_logging(pid1);
    if let Err(e) = reroot {
        tracing::error!("leaving the initramfs: {e:#} (containers cannot pivot_root)");
    }
    if let Err(e) = run(pid1) {
        tracing::error!("{e:#}");
        if pid1 {
            // PID 1 must not exit: that panics the kernel. Power off instead.
            pid1::power_off();
        }
        std::process::exit(1);
    }
}

fn init_logging(pid1: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUNV_AGENT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    if pid1 {
        // /dev is not mounted yet: mount it just for the console, early mounts follow.
        let _ = pid1::early_mounts();
        if let Some(console) = pid1::console() {
            // No lock around the console: libcontainer clones while other threads may be
            // logging, and a child that inherits a held lock and then logs would hang.
            // Each event gets its own handle and one write.
            let writer = move || -> Box<dyn std::io::Write> {
                match console.try_clone() {
                    Ok(f) => Box::new(f),
                    Err(_) => Box::new(std::io::sink()),
                }
            };
            builder.with_writer(writer).init();
            return;
        }
    }
    // Not `std::io::stderr`: its global lock is the same hazard as above. And not fd 2
    // at the time of writing: in a container process the builder cloned (builder.rs),
    // fd 2 is the container's stderr by then, and libcontainer's own warnings must not
    // land there. A CLOEXEC duplicate taken now keeps pointing at the agent's stderr.
    use std::os::fd::AsFd;
    let Ok(log) = std::io::stderr().as_fd().try_clone_to_owned() else {
        builder.with_writer(std::io::sink).init();
        return;
    };
    let log = std::fs::File::from(log);
    let writer = move || -> Box<dyn std::io::Write> {
        match log.try_clone() {
            Ok(f) => Box::new(f),
            Err(_) => Box::new(std::io::sink()),
        }
    };
    builder.with_writer(writer).init();
}

fn run(pid1: bool) -> Result<()> {
    // As PID 1 the kernel passes the command line's unknown words as arguments: ignore
    // them, the defaults are the guest's.
    let args = if pid1 {
        Args::try_parse().unwrap_or_else(|_| Args::parse_from(["runv-agent"]))
    } else {
        Args::parse()
    };
    let listen = match args.listen.clone() {
        Some(l) => l,
        None if pid1 => ListenAddr::Vsock(runv_agent_protocol::AGENT_VSOCK_PORT),
        None => anyhow::bail!(
            "--listen is required when not PID 1 (e.g. --listen unix:/tmp/agent.sock)"
        ),
    };
    let guest = pid1 || matches!(listen, ListenAddr::Vsock(_));
    if pid1 {
        pid1::early_mounts().context("early mounts")?;
        pid1::watch_power_button()?;
        // Before serving: 127.0.0.1 must work in every container, with or without
        // configure_network.
        if let Err(e) = network::loopback_up() {
            tracing::error!("bringing up lo: {e}");
        }
    }
    let connector = match (&listen, &args.stdio_base) {
        (_, Some(base)) => StdioConnector::Unix(base.clone()),
        (ListenAddr::Unix(path), None) => StdioConnector::Unix(path.clone()),
        (ListenAddr::Vsock(_), None) => StdioConnector::Vsock,
    };
    if !pid1 {
        // Container processes are built by a helper process and then orphaned: they
        // must come to this process (as they come to PID 1 in the guest).
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER reads only its integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
            anyhow::bail!(
                "prctl(PR_SET_CHILD_SUBREAPER): {}",
                std::io::Error::last_os_error()
            );
        }
    }
    let reaper = reaper::Reaper::start();
    let paths = Paths {
        state: args.state_dir.clone(),
        shares: args.share_dir.clone(),
        // Only in the guest: on a host the agent must not change the host's sysctls.
        net_sysctls: guest.then(|| PathBuf::from("/proc/sys")),
    };
    let manager = Manager::new(paths, connector, reaper)
        .with_context(|| format!("state dir {}", args.state_dir.display()))?;
    let agent = Arc::new(Agent {
        manager,
        // Only PID 1 changes the network: on a host it is the host's.
        network: network::Network::new(pid1),
        pid1,
        share_dir: args.share_dir.clone(),
    });
    let listener = Listener::bind(&listen).with_context(|| format!("listening on {listen:?}"))?;
    tracing::info!(?listen, guest, "{SOFTWARE} serving");
    loop {
        let stream = match listener.accept() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept: {e}");
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
        };
        let agent = agent.clone();
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .spawn(move || serve(&agent, stream));
        if let Err(e) = spawned {
            tracing::warn!("cannot start a connection thread: {e}");
        }
    }
}

/// One control connection: requests are answered in order. `wait_process` blocks its
/// connection, so shims wait on a connection of their own (docs/agent-protocol.md).
fn serve(agent: &Agent, stream: Stream) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let mut server = match Server::accept(stream, SUPPORTED_VERSIONS, SOFTWARE) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("handshake: {e}");
            return;
        }
    };
    loop {
        let frame = match server.next_request() {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("connection: {e}");
                return;
            }
        };
        let kind = frame.request.kind();
        let shutdown = matches!(frame.request, Request::Shutdown);
        let response = handle(agent, frame.request, fd).unwrap_or_else(|e| {
            tracing::info!(kind, "refused: {}", e.message);
            Response::Error(e)
        });
        if let Err(e) = server.respond(frame.id, &response) {
            tracing::warn!("answering {kind}: {e}");
            return;
        }
        if shutdown {
            agent.manager.destroy_all();
            if agent.pid1 {
                pid1::power_off();
            }
            tracing::info!("shutdown requested; exiting");
            std::process::exit(0);
        }
    }
}

/// `conn` is the connection's fd, the lifeline of a `kill_on_close` wait.
fn handle(agent: &Agent, request: Request, conn: RawFd) -> Result<Response, ErrorResponse> {
    let m = &agent.manager;
    match request {
        Request::Ping | Request::Shutdown => Ok(Response::Ok),
        Request::CreateSandbox {
            hostname,
            dns,
            shares,
            ..
        } => create_sandbox(agent, &hostname, &dns, &shares),
        Request::ConfigureNetwork { network } => agent
            .network
            .configure(&network)
            .map(|()| Response::Ok)
            .map_err(|e| e.response()),
        Request::CreateContainer {
            container_id,
            spec,
            rootfs,
            stdio,
        } => m.create(&container_id, *spec, &rootfs, &stdio),
        Request::StartContainer { container_id } => m.start(&container_id),
        Request::ExecProcess {
            container_id,
            exec_id,
            process,
            stdio,
        } => m.exec(&container_id, &exec_id, &process, &stdio),
        Request::SignalProcess {
            container_id,
            exec_id,
            signal,
            all,
        } => m.signal(&container_id, exec_id.as_deref(), signal, all),
        Request::WaitProcess {
            container_id,
            exec_id,
            kill_on_close,
        } => m.wait(
            &container_id,
            exec_id.as_deref(),
            kill_on_close.then_some(conn),
        ),
        Request::State { container_id } => m.state(&container_id),
        Request::ListProcesses { container_id } => m.list(&container_id),
        Request::ResizeTty {
            container_id,
            exec_id,
            rows,
            cols,
        } => m.resize(&container_id, exec_id.as_deref(), rows, cols),
        Request::CloseStdin {
            container_id,
            exec_id,
        } => m.close_stdin(&container_id, exec_id.as_deref()),
        Request::Stats { container_id } => m.stats(&container_id),
        Request::PauseContainer { container_id } => m.pause(&container_id, true),
        Request::ResumeContainer { container_id } => m.pause(&container_id, false),
        Request::UpdateContainer {
            container_id,
            resources,
        } => m.update(&container_id, &resources),
        Request::DestroyContainer { container_id } => m.destroy(&container_id),
    }
}

/// In the guest: hostname, resolv.conf and the virtio-fs shares. On a host the agent
/// must not change the machine's hostname or mounts, so this only checks the tags.
fn create_sandbox(
    agent: &Agent,
    hostname: &str,
    dns: &runv_agent_protocol::DnsConfig,
    shares: &[String],
) -> Result<Response, ErrorResponse> {
    use runv_agent_protocol::ErrorCode;
    for tag in shares {
        runv_agent_protocol::share::validate_tag(tag).map_err(|e| {
            ErrorResponse::field(ErrorCode::InvalidArgument, "shares", format!("shares: {e}"))
        })?;
    }
    if !agent.pid1 {
        return Ok(Response::Ok);
    }
    let internal = |e: anyhow::Error| ErrorResponse::new(ErrorCode::Internal, format!("{e:#}"));
    if !hostname.is_empty() {
        nix::unistd::sethostname(hostname).map_err(|e| {
            ErrorResponse::field(
                ErrorCode::InvalidArgument,
                "hostname",
                format!("hostname {hostname:?}: {e}"),
            )
        })?;
    }
    let mut resolv = String::new();
    for s in &dns.servers {
        resolv.push_str(&format!("nameserver {s}\n"));
    }
    if !dns.searches.is_empty() {
        resolv.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    if !dns.options.is_empty() {
        resolv.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    if !resolv.is_empty() {
        std::fs::create_dir_all("/etc")
            .and_then(|_| std::fs::write("/etc/resolv.conf", resolv))
            .map_err(|e| {
                ErrorResponse::new(
                    ErrorCode::Internal,
                    format!("writing /etc/resolv.conf: {e}"),
                )
            })?;
    }
    for tag in shares {
        pid1::mount_share(tag, &agent.share_dir.join(tag)).map_err(internal)?;
    }
    Ok(Response::Ok)
}
