//! `runv-vmm`: boots one micro-VM and exits with its status.
//!
//! Exit status: 0 the guest powered off (ACPI S5); 1 a KVM or VMM error; 2 bad arguments;
//! 3 the guest reset the machine; 4 the guest kernel panicked; 5 a thread made a system
//! call its seccomp filter forbids. Anything but 0 comes with a one-line reason on stderr.

use clap::Parser;
use runv_vmm::devices::virtio::block::BlockConfig;
use runv_vmm::devices::virtio::fs::FsConfig;
use runv_vmm::devices::virtio::net::NetConfig;
use runv_vmm::devices::virtio::vsock::VsockConfig;
use runv_vmm::{Console, ExitReason, VmConfig};
use std::path::PathBuf;

/// Boot a Linux guest kernel in a KVM micro-VM.
#[derive(Debug, Parser)]
#[command(name = "runv-vmm", version, about)]
struct Args {
    /// Guest kernel: ELF vmlinux (64-bit direct entry) or bzImage.
    #[arg(long, required_unless_present_any = ["print_cmdline", "check_kvm"])]
    kernel: Option<PathBuf>,
    /// Initramfs to hand to the kernel.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line, replacing the default; the VMM appends its device entries.
    #[arg(long)]
    cmdline: Option<String>,
    /// Words added to the command line (to the default, or to --cmdline), before any
    /// ` -- ` init arguments (repeatable).
    #[arg(long = "cmdline-append", value_name = "WORDS")]
    cmdline_append: Vec<String>,
    /// Print the command line (the default, or --cmdline, with --cmdline-append) without
    /// the VMM's device entries, and exit: what scripts pass to other VMMs.
    #[arg(long)]
    print_cmdline: bool,
    /// Check that this host's KVM can run the VM (the backend is not kvm_pvm alone;
    /// /dev/kvm opens and makes a VM), print what was found, and exit: 0 when it can.
    #[arg(long)]
    check_kvm: bool,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u8,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 128)]
    memory: u64,
    /// Serial console: stdout, off, or a file path to append to.
    #[arg(long, default_value = "stdout")]
    console: Console,
    /// Write at most BYTES of console output, then a notice, and discard the rest.
    #[arg(long, value_name = "BYTES")]
    console_limit: Option<u64>,
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
    /// virtio-net on a tap runv opened and passed down as fd N (IFF_TAP|IFF_NO_PI|
    /// IFF_VNET_HDR): fd=N,mac=MAC[,mtu=N] (repeatable, one device each: eth0, eth1 ...).
    #[arg(long = "net", value_name = "fd=N,mac=MAC[,mtu=N]")]
    net: Vec<NetConfig>,
    /// Run jailed: new PID, mount, IPC and UTS namespaces, a root holding only the VM's
    /// files and /dev/kvm, and only the capabilities virtio-fs needs (docs/security.md).
    #[arg(long)]
    jail: bool,
    /// With --jail: at most N open files (virtio-fs holds one per guest inode it knows).
    #[arg(long, value_name = "N", default_value_t = runv_vmm::jail::DEFAULT_OPEN_FILES)]
    open_files: u64,
    /// Per-thread seccomp filters: trap (a forbidden call ends the VMM with status 5),
    /// log (allowed and reported in the kernel's audit log), or off.
    #[arg(
        long,
        value_name = "MODE",
        default_value = "trap",
        env = "RUNV_VMM_SECCOMP"
    )]
    seccomp: runv_vmm::seccomp::Mode,
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
    let cmdline = runv_vmm::boot::base_cmdline(args.cmdline.as_deref(), &args.cmdline_append);
    if args.print_cmdline {
        println!("{cmdline}");
        return;
    }
    if args.check_kvm {
        use runv_vmm::host;
        let dev_kvm = std::path::Path::new(host::DEV_KVM);
        match host::check_kvm(std::path::Path::new(host::SYS_MODULE), dev_kvm) {
            Ok(found) => println!("{}: {found}", dev_kvm.display()),
            Err(e) => {
                eprintln!("runv-vmm: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let confinement = Confinement {
        jail: args.jail,
        open_files: args.open_files,
        seccomp: args.seccomp,
    };
    let mut config = VmConfig {
        kernel: args.kernel.expect("clap requires --kernel"),
        initrd: args.initrd,
        cmdline: Some(cmdline),
        cpus: args.cpus,
        memory_mib: args.memory,
        console: args.console,
        console_limit: args.console_limit,
        fs: args.fs,
        block: args.block,
        vsock: args.vsock,
        net: args.net,
    };
    if let Err(e) = confine(&mut config, &confinement) {
        eprintln!("runv-vmm: {e}");
        std::process::exit(1);
    }
    let code = match runv_vmm::run(&config) {
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

/// How the VMM confines itself before it builds the VM.
struct Confinement {
    jail: bool,
    open_files: u64,
    seccomp: runv_vmm::seccomp::Mode,
}

/// Compiles the seccomp filters (the threads install them), and with `--jail` enters the
/// jail. The host checks that need its /sys run first.
fn confine(config: &mut VmConfig, c: &Confinement) -> Result<(), Box<dyn std::error::Error>> {
    config.validate()?;
    runv_vmm::host::check_kvm_backend(std::path::Path::new(runv_vmm::host::SYS_MODULE))?;
    runv_vmm::seccomp::prepare(c.seccomp)?;
    if c.jail {
        runv_vmm::jail::absolute_paths(config)?;
        runv_vmm::jail::enter(&runv_vmm::jail::JailSpec::for_vm(config, c.open_files)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// `--help` shows each device option's usage as its parser spells it in errors.
    #[test]
    fn device_options_show_their_parser_usage() {
        use runv_vmm::devices::virtio::{block, fs, vsock};
        let cmd = Args::command();
        for spec in [block::OPTION, fs::OPTION, vsock::device::OPTION] {
            let name = spec.option().trim_start_matches("--");
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(name))
                .unwrap_or_else(|| panic!("no {}", spec.option()));
            let shown: Vec<_> = arg.get_value_names().unwrap_or_default().to_vec();
            assert_eq!(shown, [spec.usage()], "{}", spec.option());
        }
    }
}
