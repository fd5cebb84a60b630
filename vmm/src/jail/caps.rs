//! Capabilities and resource limits of the jailed VMM.
//!
//! runv-vmm keeps uid 0 so its virtio-fs server can act for guest root on the share,
//! but only with the capabilities that needs (each one's reason is in
//! docs/security.md); everything else, CAP_SYS_ADMIN and CAP_NET_ADMIN included, leaves
//! every set, the bounding set too, so nothing the VMM later runs or becomes can get it
//! back.

use super::Error;
use caps::{CapSet, Capability, CapsHashSet};

/// What the in-process virtio-fs server needs to act for guest root on the share.
pub const KEPT: [Capability; 8] = [
    // chown(2) to any owner: the guest's chown and files created for other uids.
    Capability::CAP_CHOWN,
    // Read and write files whatever their mode, as guest root may.
    Capability::CAP_DAC_OVERRIDE,
    // chmod, utimes and xattrs of files not owned by the caller's fsuid.
    Capability::CAP_FOWNER,
    // Keep set-group-id bits on chmod/write as the guest asked.
    Capability::CAP_FSETID,
    // Switch the thread's fsuid/fsgid to the guest caller's before creating a file.
    Capability::CAP_SETUID,
    Capability::CAP_SETGID,
    // mknod of FIFOs and sockets in the rootfs (device nodes are refused by the share's
    // nodev mounts and by the server itself).
    Capability::CAP_MKNOD,
    // Set file capabilities (security.capability xattrs) the guest sets on its files.
    Capability::CAP_SETFCAP,
];

fn caps_err(what: &str) -> impl FnOnce(caps::errors::CapsError) -> Error + '_ {
    move |e| Error::Sys {
        what: what.into(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Drops every capability but [`KEPT`] from the bounding, inheritable, ambient,
/// permitted and effective sets of the calling thread (threads created later inherit
/// them), and sets no_new_privs.
pub fn drop_all_but_vmm() -> Result<(), Error> {
    drop_all_but(&KEPT)
}

/// The supervisor's drop: no capability in any set, and no_new_privs.
pub fn drop_everything() -> Result<(), Error> {
    drop_all_but(&[])
}

fn drop_all_but(kept: &[Capability]) -> Result<(), Error> {
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) has no memory effects.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(Error::sys("PR_SET_NO_NEW_PRIVS"));
    }
    let keep: CapsHashSet = kept.iter().copied().collect();
    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes below.
    // Up to 63 (the sets are 64 bits wide): numbers this kernel has but the `caps` crate
    // does not name are dropped too; numbers the kernel does not know fail with EINVAL.
    for n in 0u8..64 {
        if keep.iter().any(|c| c.index() == n) {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes a capability number and has no memory effects.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(n), 0, 0, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
        {
            return Err(Error::sys(format!(
                "dropping capability {n} from the bounding set"
            )));
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clearing the ambient set"))?;
    caps::clear(None, CapSet::Inheritable).map_err(caps_err("clearing the inheritable set"))?;
    caps::set(None, CapSet::Effective, &keep).map_err(caps_err("setting the effective set"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(caps_err("setting the permitted set"))?;
    Ok(())
}

/// Resource limits: no core dump (it would hold guest memory), `open_files` open files
/// at most (virtio-fs holds one `O_PATH` fd per inode the guest knows).
pub fn limit(open_files: u64) -> Result<(), Error> {
    // The kernel refuses more than fs.nr_open.
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(open_files);
    let open_files = open_files.min(nr_open);
    for (resource, value, name) in [
        (libc::RLIMIT_CORE, 0, "RLIMIT_CORE"),
        (libc::RLIMIT_NOFILE, open_files, "RLIMIT_NOFILE"),
    ] {
        let lim = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: `lim` is a valid rlimit for the call.
        if unsafe { libc::setrlimit(resource, &lim) } != 0 {
            return Err(Error::sys(format!("setrlimit {name} {value}")));
        }
    }
    Ok(())
}
