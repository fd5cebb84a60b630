//! Duties of the guest's PID 1: the early mounts, the serial console, and power off.

use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};

/// Moves the agent from the initramfs onto a tmpfs root, as switch_root does. The
/// initramfs root cannot be unmounted, so `pivot_root` in a container's mount namespace
/// fails with EINVAL while it is `/`; on a tmpfs root it works.
pub fn leave_initramfs() -> Result<()> {
    let new = Path::new("/newroot");
    std::fs::create_dir_all(new).context("creating /newroot")?;
    mount(
        Some("tmpfs"),
        new,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .context("mounting the tmpfs root")?;
    std::fs::copy("/init", new.join("init")).context("copying /init to the new root")?;
    for d in ["dev", "proc", "sys", "run", "tmp", "etc"] {
        std::fs::create_dir_all(new.join(d)).with_context(|| format!("creating /{d}"))?;
    }
    nix::unistd::chdir(new).context("chdir /newroot")?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .context("moving the new root to /")?;
    nix::unistd::chroot(".").context("chroot into the new root")?;
    nix::unistd::chdir("/").context("chdir /")?;
    Ok(())
}

/// Mounts what a Linux system and libcontainer need. Mounts that already exist (the
/// kernel may have mounted devtmpfs) are left alone.
pub fn early_mounts() -> Result<()> {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let table: &[(&str, &str, &str, MsFlags, Option<&str>)] = &[
        ("proc", "/proc", "proc", nosuid_nodev_noexec, None),
        ("sysfs", "/sys", "sysfs", nosuid_nodev_noexec, None),
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        ),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        ),
        (
            "shm",
            "/dev/shm",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
        (
            "cgroup2",
            "/sys/fs/cgroup",
            "cgroup2",
            nosuid_nodev_noexec,
            None,
        ),
    ];
    for (source, target, fstype, flags, data) in table {
        std::fs::create_dir_all(target).with_context(|| format!("creating {target}"))?;
        if is_mountpoint(target) {
            continue;
        }
        mount(Some(*source), *target, Some(*fstype), *flags, *data)
            .with_context(|| format!("mounting {fstype} at {target}"))?;
    }
    enable_controllers();
    Ok(())
}

fn is_mountpoint(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|s| s.lines().any(|l| l.split(' ').nth(4) == Some(path)))
        .unwrap_or(false)
}

/// Lets child cgroups use every controller the kernel has.
fn enable_controllers() {
    let root = Path::new("/sys/fs/cgroup");
    let Ok(available) = std::fs::read_to_string(root.join("cgroup.controllers")) else {
        return;
    };
    for c in available.split_whitespace() {
        if let Err(e) = std::fs::write(root.join("cgroup.subtree_control"), format!("+{c}")) {
            tracing::warn!("enabling cgroup controller {c}: {e}");
        }
    }
}

/// Mounts a virtio-fs share at `dir`.
pub fn mount_share(tag: &str, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if is_mountpoint(&dir.to_string_lossy()) {
        return Ok(());
    }
    mount(
        Some(tag),
        dir,
        Some("virtiofs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| format!("mounting virtio-fs tag {tag:?} at {}", dir.display()))
}

/// The log's destination: the serial console.
pub fn console() -> Option<std::fs::File> {
    ["/dev/console", "/dev/ttyS0"]
        .iter()
        .find_map(|p| std::fs::OpenOptions::new().write(true).open(p).ok())
}

/// Syncs and powers the VM off (ACPI S5: runv-vmm exits 0). Does not return.
pub fn power_off() -> ! {
    tracing::info!("powering off");
    nix::unistd::sync();
    let e = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    tracing::error!("reboot(RB_POWER_OFF) failed: {e:?}");
    std::process::exit(1)
}

static POWER_BUTTON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_sigpwr(_: libc::c_int) {
    POWER_BUTTON.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// SIGPWR (sent by the guest kernel's ACPI power button driver) powers off. A handler
/// that only sets a flag, polled by a thread: no signal mask is changed, so container
/// processes do not inherit a blocked signal.
pub fn watch_power_button() -> Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_sigpwr),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { sigaction(Signal::SIGPWR, &action) }.context("installing the SIGPWR handler")?;
    std::thread::Builder::new()
        .name("sigpwr".into())
        .spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_millis(100));
            if POWER_BUTTON.load(std::sync::atomic::Ordering::SeqCst) {
                tracing::info!("SIGPWR: power button");
                power_off();
            }
        })
        .context("spawning the SIGPWR thread")?;
    Ok(())
}
