//! `runv-vmm`: boots one micro-VM and exits with its status.
//!
//! Exit status: 0 the guest powered off (ACPI S5); 1 a KVM or VMM error; 2 bad arguments;
//! 3 the guest reset the machine; 4 the guest kernel panicked. Anything but 0 comes with
//! a one-line reason on stderr.

use clap::Parser;
use std::path::PathBuf;
use vmm::devices::virtio::block::BlockConfig;
use vmm::devices::virtio::fs::FsConfig;
use vmm::devices::virtio::vsock::VsockConfig;
use vmm::{Console, ExitReason, VmConfig};

/// Boot a Linux guest kernel in a KVM micro-VM.
#[derive(Debug, Parser)]
#[command(name = "runv-vmm", version, about)]
struct Args {
    /// Guest kernel: ELF vmlinux (64-bit direct entry) or bzImage.
    #[arg(long)]
    kernel: PathBuf,
    /// Initramfs to hand to the kernel.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line, replacing the default; the VMM appends its device entries.
    #[arg(long)]
    cmdline: Option<String>,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u8,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 128)]
    memory: u64,
    /// Serial console: stdout, off, or a file path to append to.
    #[arg(long, default_value = "stdout")]
    console: Console,
    /// Share a host directory over virtio-fs: tag=NAME,path=DIR[,ro] (repeatable); the guest
    /// mounts it with `mount -t virtiofs NAME /mnt`.
    #[arg(long = "fs", value_name = "tag=NAME,path=DIR[,ro]")]
    fs: Vec<FsConfig>,
    /// Attach a raw disk image over virtio-blk: path=FILE[,ro][,id=NAME] (repeatable; the
    /// first is /dev/vda). `id` is the serial the guest sees, by default the file name.
    #[arg(long = "block", value_name = "path=FILE[,ro][,id=NAME]")]
    block: Vec<BlockConfig>,
    /// virtio-vsock over Unix sockets (hybrid vsock): cid=N,uds=PATH. Host clients connect
    /// to PATH and write "CONNECT <port>\n"; guest connects to host port P reach PATH_P.
    #[arg(long, value_name = "cid=N,uds=PATH")]
    vsock: Option<VsockConfig>,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUNV_LOG")
                // fuse-backend-rs logs malformed guest requests without a limit, and
                // virtio-queue logs bad rings the same way; the devices and the virtio-mmio
                // transport report them, rate-limited, instead.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("warn,fuse_backend_rs=off,virtio_queue=off")
                }),
        )
        .with_writer(std::io::stderr)
        .init();
    // A panic on any thread (a vCPU's included) ends the VM with an error status instead of
    // leaving the VMM waiting for a vCPU that is gone.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("runv-vmm: internal error: {info}");
        std::process::exit(1);
    }));
    let args = Args::parse();
    let config = VmConfig {
        kernel: args.kernel,
        initrd: args.initrd,
        cmdline: args.cmdline,
        cpus: args.cpus,
        memory_mib: args.memory,
        console: args.console,
        fs: args.fs,
        block: args.block,
        vsock: args.vsock,
    };
    let code = match vmm::run(&config) {
        Ok(ExitReason::PowerOff) => 0,
        Ok(reason) => {
            eprintln!("runv-vmm: {reason}");
            reason.exit_code()
        }
        Err(e) => {
            eprintln!("runv-vmm: {e}");
            1
        }
    };
    std::process::exit(code);
}
