//! `WriteGate`: the file system a share serves, with read-only enforced in the VMM.
//!
//! `PassthroughFs` has no read-only switch, and the guest decides how it mounts a share, so a
//! read-only share cannot rely on the guest. The gate wraps the passthrough and answers every
//! operation that would change the share with `EROFS` before the host is touched: creating,
//! removing, renaming or linking names, writing or truncating data, `setattr` (chmod, chown,
//! utimes, truncate), xattr changes, `fallocate`, and `open`/`access` asking for write access.
//! Everything else is forwarded unchanged. `init` also asks for the protocol options of
//! [`super::FUSE_OPTIONS`], which `PassthroughFs` alone does not. Operations that `PassthroughFs` does not implement
//! (ioctl, locks, bmap, poll, DAX mappings) are not forwarded: they keep the trait's `ENOSYS`.

use std::ffi::CStr;
use std::io;
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{stat64, statvfs64, CreateIn};
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileSystem, FsOptions, GetxattrReply, ListxattrReply, OpenOptions,
    SetattrValid, ZeroCopyReader, ZeroCopyWriter,
};

fn erofs() -> io::Error {
    io::Error::from_raw_os_error(libc::EROFS)
}

/// Whether `open(2)` flags ask for anything a read-only file system must refuse.
pub fn open_flags_write(flags: u32) -> bool {
    let flags = flags as i32;
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0
}

/// A file system with writes optionally refused (`EROFS`).
pub struct WriteGate<F> {
    inner: F,
    read_only: bool,
}

impl<F: FileSystem> WriteGate<F> {
    /// Wraps `inner`; with `read_only`, every modifying operation fails with `EROFS`.
    pub fn new(inner: F, read_only: bool) -> Self {
        WriteGate { inner, read_only }
    }

    /// Whether writes are refused.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The wrapped file system.
    pub fn inner(&self) -> &F {
        &self.inner
    }

    fn check_write(&self) -> io::Result<()> {
        if self.read_only {
            Err(erofs())
        } else {
            Ok(())
        }
    }
}

impl<F: FileSystem> FileSystem for WriteGate<F> {
    type Inode = F::Inode;
    type Handle = F::Handle;

    fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
        // The server enables what the kernel offers AND the file system wants.
        let mut opts = self.inner.init(capable)? | super::FUSE_OPTIONS;
        if self.read_only {
            // Nothing is ever written back on a read-only share.
            opts.remove(FsOptions::WRITEBACK_CACHE);
        }
        Ok(opts)
    }

    fn destroy(&self) {
        self.inner.destroy()
    }

    fn lookup(&self, ctx: &Context, parent: Self::Inode, name: &CStr) -> io::Result<Entry> {
        self.inner.lookup(ctx, parent, name)
    }

    fn forget(&self, ctx: &Context, inode: Self::Inode, count: u64) {
        self.inner.forget(ctx, inode, count)
    }

    fn batch_forget(&self, ctx: &Context, requests: Vec<(Self::Inode, u64)>) {
        self.inner.batch_forget(ctx, requests)
    }

    fn getattr(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        handle: Option<Self::Handle>,
    ) -> io::Result<(stat64, Duration)> {
        self.inner.getattr(ctx, inode, handle)
    }

    fn setattr(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        attr: stat64,
        handle: Option<Self::Handle>,
        valid: SetattrValid,
    ) -> io::Result<(stat64, Duration)> {
        self.check_write()?;
        self.inner.setattr(ctx, inode, attr, handle, valid)
    }

    fn readlink(&self, ctx: &Context, inode: Self::Inode) -> io::Result<Vec<u8>> {
        self.inner.readlink(ctx, inode)
    }

    fn symlink(
        &self,
        ctx: &Context,
        linkname: &CStr,
        parent: Self::Inode,
        name: &CStr,
    ) -> io::Result<Entry> {
        self.check_write()?;
        self.inner.symlink(ctx, linkname, parent, name)
    }

    fn mknod(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        name: &CStr,
        mode: u32,
        rdev: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        self.check_write()?;
        self.inner.mknod(ctx, inode, name, mode, rdev, umask)
    }

    fn mkdir(
        &self,
        ctx: &Context,
        parent: Self::Inode,
        name: &CStr,
        mode: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        self.check_write()?;
        self.inner.mkdir(ctx, parent, name, mode, umask)
    }

    fn unlink(&self, ctx: &Context, parent: Self::Inode, name: &CStr) -> io::Result<()> {
        self.check_write()?;
        self.inner.unlink(ctx, parent, name)
    }

    fn rmdir(&self, ctx: &Context, parent: Self::Inode, name: &CStr) -> io::Result<()> {
        self.check_write()?;
        self.inner.rmdir(ctx, parent, name)
    }

    fn rename(
        &self,
        ctx: &Context,
        olddir: Self::Inode,
        oldname: &CStr,
        newdir: Self::Inode,
        newname: &CStr,
        flags: u32,
    ) -> io::Result<()> {
        self.check_write()?;
        self.inner
            .rename(ctx, olddir, oldname, newdir, newname, flags)
    }

    fn link(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        newparent: Self::Inode,
        newname: &CStr,
    ) -> io::Result<Entry> {
        self.check_write()?;
        self.inner.link(ctx, inode, newparent, newname)
    }

    fn open(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<(Option<Self::Handle>, OpenOptions, Option<u32>)> {
        if open_flags_write(flags) {
            self.check_write()?;
        }
        self.inner.open(ctx, inode, flags, fuse_flags)
    }

    fn create(
        &self,
        ctx: &Context,
        parent: Self::Inode,
        name: &CStr,
        args: CreateIn,
    ) -> io::Result<(Entry, Option<Self::Handle>, OpenOptions, Option<u32>)> {
        self.check_write()?;
        self.inner.create(ctx, parent, name, args)
    }

    fn read(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        handle: Self::Handle,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        lock_owner: Option<u64>,
        flags: u32,
    ) -> io::Result<usize> {
        self.inner
            .read(ctx, inode, handle, w, size, offset, lock_owner, flags)
    }

    fn write(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        handle: Self::Handle,
        r: &mut dyn ZeroCopyReader,
        size: u32,
        offset: u64,
        lock_owner: Option<u64>,
        delayed_write: bool,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<usize> {
        self.check_write()?;
        self.inner.write(
            ctx,
            inode,
            handle,
            r,
            size,
            offset,
            lock_owner,
            delayed_write,
            flags,
            fuse_flags,
        )
    }

    fn flush(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        handle: Self::Handle,
        lock_owner: u64,
    ) -> io::Result<()> {
        self.inner.flush(ctx, inode, handle, lock_owner)
    }

    fn fsync(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        datasync: bool,
        handle: Self::Handle,
    ) -> io::Result<()> {
        self.inner.fsync(ctx, inode, datasync, handle)
    }

    fn fallocate(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        handle: Self::Handle,
        mode: u32,
        offset: u64,
        length: u64,
    ) -> io::Result<()> {
        self.check_write()?;
        self.inner
            .fallocate(ctx, inode, handle, mode, offset, length)
    }

    fn release(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        flags: u32,
        handle: Self::Handle,
        flush: bool,
        flock_release: bool,
        lock_owner: Option<u64>,
    ) -> io::Result<()> {
        self.inner
            .release(ctx, inode, flags, handle, flush, flock_release, lock_owner)
    }

    fn statfs(&self, ctx: &Context, inode: Self::Inode) -> io::Result<statvfs64> {
        self.inner.statfs(ctx, inode)
    }

    fn setxattr(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        name: &CStr,
        value: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        self.check_write()?;
        self.inner.setxattr(ctx, inode, name, value, flags)
    }

    fn getxattr(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        name: &CStr,
        size: u32,
    ) -> io::Result<GetxattrReply> {
        self.inner.getxattr(ctx, inode, name, size)
    }

    fn listxattr(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        size: u32,
    ) -> io::Result<ListxattrReply> {
        self.inner.listxattr(ctx, inode, size)
    }

    fn removexattr(&self, ctx: &Context, inode: Self::Inode, name: &CStr) -> io::Result<()> {
        self.check_write()?;
        self.inner.removexattr(ctx, inode, name)
    }

    fn opendir(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        flags: u32,
    ) -> io::Result<(Option<Self::Handle>, OpenOptions)> {
        self.inner.opendir(ctx, inode, flags)
    }

    fn readdir(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        handle: Self::Handle,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.inner
            .readdir(ctx, inode, handle, size, offset, add_entry)
    }

    fn readdirplus(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        handle: Self::Handle,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.inner
            .readdirplus(ctx, inode, handle, size, offset, add_entry)
    }

    fn fsyncdir(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        datasync: bool,
        handle: Self::Handle,
    ) -> io::Result<()> {
        self.inner.fsyncdir(ctx, inode, datasync, handle)
    }

    fn releasedir(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        flags: u32,
        handle: Self::Handle,
    ) -> io::Result<()> {
        self.inner.releasedir(ctx, inode, flags, handle)
    }

    fn access(&self, ctx: &Context, inode: Self::Inode, mask: u32) -> io::Result<()> {
        if mask & libc::W_OK as u32 != 0 {
            self.check_write()?;
        }
        self.inner.access(ctx, inode, mask)
    }

    fn lseek(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        handle: Self::Handle,
        offset: u64,
        whence: u32,
    ) -> io::Result<u64> {
        self.inner.lseek(ctx, inode, handle, offset, whence)
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    use fuse_backend_rs::api::filesystem::ROOT_ID;
    use fuse_backend_rs::passthrough::PassthroughFs;
    use vmm_sys_util::tempdir::TempDir;

    use super::*;
    use crate::devices::virtio::fs::passthrough_config;

    fn share(read_only: bool) -> (TempDir, WriteGate<PassthroughFs<()>>) {
        let dir = TempDir::new_with_prefix("/tmp/runv-gate-").unwrap();
        std::fs::write(dir.as_path().join("file"), b"data").unwrap();
        std::fs::create_dir(dir.as_path().join("dir")).unwrap();
        let fs = PassthroughFs::<()>::new(passthrough_config(dir.as_path())).unwrap();
        let gate = WriteGate::new(fs, read_only);
        gate.init(FsOptions::empty()).unwrap();
        (dir, gate)
    }

    fn name(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    fn errno<T>(r: io::Result<T>) -> Option<i32> {
        r.err().and_then(|e| e.raw_os_error())
    }

    fn attr(valid: SetattrValid, f: impl FnOnce(&mut stat64)) -> (stat64, SetattrValid) {
        // SAFETY: stat64 is plain data; all-zero is a valid value.
        let mut st: stat64 = unsafe { std::mem::zeroed() };
        f(&mut st);
        (st, valid)
    }

    /// A device node the guest made on a share served from a tmpfs mounted with
    /// `flags`, opened read-write through the server: the open's result.
    fn open_guest_made_device(flags: libc::c_ulong) -> io::Result<()> {
        let dir = TempDir::new_with_prefix("/tmp/runv-gate-dev-").unwrap();
        let target = CString::new(dir.as_path().as_os_str().as_encoded_bytes()).unwrap();
        let opts = c"size=1m";
        // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                flags,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount: {}", io::Error::last_os_error());
        let result = (|| {
            let fs = PassthroughFs::<()>::new(passthrough_config(dir.as_path())).unwrap();
            let gate = WriteGate::new(fs, false);
            gate.init(FsOptions::empty()).unwrap();
            let ctx = Context::default();
            // What a hostile guest sends: MKNOD of /dev/null's numbers, then OPEN of it.
            let e = gate.mknod(
                &ctx,
                ROOT_ID,
                &name("null"),
                libc::S_IFCHR | 0o666,
                libc::makedev(1, 3) as u32,
                0,
            )?;
            gate.open(&ctx, e.inode, libc::O_RDWR as u32, 0).map(|_| ())
        })();
        // SAFETY: a valid NUL-terminated path; MNT_DETACH needs nothing else.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        result
    }

    #[test]
    #[ignore = "needs root: mounts a tmpfs and makes a device node"]
    fn root_a_device_node_made_by_the_guest_is_never_opened() {
        // The passthrough opens no special file (it answers EBADF), even on a mount that
        // allows devices; runv's share mounts are nodev besides (runtime-cli/src/share.rs),
        // so the host kernel would refuse the open too. Both layers are pinned here.
        for (flags, what) in [
            (0, "a mount that allows devices"),
            (libc::MS_NODEV, "nodev"),
        ] {
            let e = open_guest_made_device(flags)
                .expect_err(&format!("the guest's device node was opened on {what}"));
            assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{what}: {e}");
        }
    }

    #[test]
    fn write_flags_are_recognised() {
        assert!(!open_flags_write(libc::O_RDONLY as u32));
        assert!(!open_flags_write(
            (libc::O_RDONLY | libc::O_DIRECTORY) as u32
        ));
        assert!(open_flags_write(libc::O_WRONLY as u32));
        assert!(open_flags_write(libc::O_RDWR as u32));
        assert!(open_flags_write((libc::O_RDONLY | libc::O_TRUNC) as u32));
    }

    #[test]
    fn read_only_refuses_every_change_and_serves_reads() {
        let (dir, fs) = share(true);
        let ctx = Context::default();
        let file = fs.lookup(&ctx, ROOT_ID, &name("file")).unwrap().inode;
        let sub = fs.lookup(&ctx, ROOT_ID, &name("dir")).unwrap().inode;
        let rofs = Some(libc::EROFS);
        let (mode, valid) = attr(SetattrValid::MODE, |st| st.st_mode = 0o600);
        assert_eq!(errno(fs.setattr(&ctx, file, mode, None, valid)), rofs);
        let (owner, valid) = attr(SetattrValid::UID | SetattrValid::GID, |st| {
            st.st_uid = 1;
            st.st_gid = 1;
        });
        assert_eq!(errno(fs.setattr(&ctx, file, owner, None, valid)), rofs);
        let (size, valid) = attr(SetattrValid::SIZE, |_| {});
        assert_eq!(errno(fs.setattr(&ctx, file, size, None, valid)), rofs);
        assert_eq!(
            errno(fs.symlink(&ctx, &name("file"), ROOT_ID, &name("l"))),
            rofs
        );
        assert_eq!(
            errno(fs.mknod(&ctx, ROOT_ID, &name("n"), libc::S_IFIFO | 0o600, 0, 0)),
            rofs
        );
        assert_eq!(errno(fs.mkdir(&ctx, ROOT_ID, &name("d"), 0o755, 0)), rofs);
        assert_eq!(errno(fs.unlink(&ctx, ROOT_ID, &name("file"))), rofs);
        assert_eq!(errno(fs.rmdir(&ctx, ROOT_ID, &name("dir"))), rofs);
        assert_eq!(
            errno(fs.rename(&ctx, ROOT_ID, &name("file"), sub, &name("moved"), 0)),
            rofs
        );
        assert_eq!(errno(fs.link(&ctx, file, ROOT_ID, &name("hard"))), rofs);
        assert_eq!(
            errno(fs.setxattr(&ctx, file, &name("user.k"), b"v", 0)),
            rofs
        );
        assert_eq!(errno(fs.removexattr(&ctx, file, &name("user.k"))), rofs);
        assert_eq!(
            errno(fs.open(&ctx, file, libc::O_RDWR as u32, 0)),
            rofs,
            "open for writing"
        );
        assert_eq!(errno(fs.access(&ctx, file, libc::W_OK as u32)), rofs);

        // Reads still work.
        fs.access(&ctx, file, libc::R_OK as u32).unwrap();
        let (handle, _, _) = fs.open(&ctx, file, libc::O_RDONLY as u32, 0).unwrap();
        let handle = handle.unwrap();
        assert_eq!(
            errno(fs.fallocate(&ctx, file, handle, 0, 0, 4096)),
            rofs,
            "fallocate"
        );
        fs.release(&ctx, file, 0, handle, false, false, None)
            .unwrap();
        fs.getattr(&ctx, file, None).unwrap();
        fs.statfs(&ctx, ROOT_ID).unwrap();

        let names: Vec<_> = std::fs::read_dir(dir.as_path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(names, ["dir", "file"]);
        let meta = std::fs::metadata(dir.as_path().join("file")).unwrap();
        assert_eq!((meta.len(), meta.mode() & 0o777 != 0o600), (4, true));
    }

    /// Operations on a symlink inode act on the link, never on what it points to: a hostile
    /// guest may send them for a link to a host file outside the share.
    #[test]
    fn metadata_changes_on_a_symlink_never_reach_its_target() {
        let (dir, fs) = share(false);
        let outside = TempDir::new_with_prefix("/tmp/runv-gate-outside-").unwrap();
        let target = outside.as_path().join("target");
        std::fs::write(&target, b"outside").unwrap();
        std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        std::os::unix::fs::symlink(&target, dir.as_path().join("link")).unwrap();
        let before = std::fs::metadata(&target).unwrap();
        let ctx = Context::default();
        let link = fs.lookup(&ctx, ROOT_ID, &name("link")).unwrap().inode;

        let (mode, valid) = attr(SetattrValid::MODE, |st| st.st_mode = 0o777);
        let _ = fs.setattr(&ctx, link, mode, None, valid);
        let (times, valid) = attr(SetattrValid::ATIME | SetattrValid::MTIME, |st| {
            st.st_atime = 1;
            st.st_mtime = 1;
        });
        let _ = fs.setattr(&ctx, link, times, None, valid);
        let (size, valid) = attr(SetattrValid::SIZE, |_| {});
        assert!(
            fs.setattr(&ctx, link, size, None, valid).is_err(),
            "truncate"
        );
        let (owner, valid) = attr(SetattrValid::UID | SetattrValid::GID, |st| {
            st.st_uid = 4321;
            st.st_gid = 4321;
        });
        let _ = fs.setattr(&ctx, link, owner, None, valid);
        let _ = fs.setxattr(&ctx, link, &name("trusted.runv"), b"x", 0);
        assert!(fs.open(&ctx, link, libc::O_RDWR as u32, 0).is_err(), "open");

        let after = std::fs::metadata(&target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"outside");
        assert_eq!(after.mode(), before.mode());
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        assert_eq!(after.mtime(), before.mtime());
        assert!(xattr_missing(&target, "trusted.runv"));
    }

    fn xattr_missing(path: &Path, key: &str) -> bool {
        let path = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let key = name(key);
        // SAFETY: both strings are NUL-terminated; a null buffer of size 0 only asks for
        // the value's length.
        let n = unsafe { libc::getxattr(path.as_ptr(), key.as_ptr(), std::ptr::null_mut(), 0) };
        n < 0
    }

    /// What a read-write share supports: symlinks, hard links, xattrs, chmod, rename (chown:
    /// `root_read_write_supports_chown`).
    #[test]
    fn read_write_supports_links_xattrs_chmod_chown_and_rename() {
        let (dir, fs) = share(false);
        let ctx = Context::default();
        let root = dir.as_path();
        let file = fs.lookup(&ctx, ROOT_ID, &name("file")).unwrap().inode;
        let sub = fs.lookup(&ctx, ROOT_ID, &name("dir")).unwrap().inode;

        fs.symlink(&ctx, &name("file"), ROOT_ID, &name("soft"))
            .unwrap();
        assert_eq!(
            std::fs::read_link(root.join("soft")).unwrap(),
            Path::new("file")
        );
        let hard = fs.link(&ctx, file, ROOT_ID, &name("hard")).unwrap();
        assert_eq!(hard.attr.st_nlink, 2);

        fs.setxattr(&ctx, file, &name("user.runv"), b"yes", 0)
            .unwrap();
        match fs.getxattr(&ctx, file, &name("user.runv"), 64).unwrap() {
            GetxattrReply::Value(v) => assert_eq!(v, b"yes"),
            GetxattrReply::Count(n) => panic!("a count ({n}) instead of the value"),
        }

        let (mode, valid) = attr(SetattrValid::MODE, |st| st.st_mode = 0o640);
        fs.setattr(&ctx, file, mode, None, valid).unwrap();
        assert_eq!(
            std::fs::metadata(root.join("file")).unwrap().mode() & 0o777,
            0o640
        );
        fs.rename(&ctx, ROOT_ID, &name("file"), sub, &name("moved"), 0)
            .unwrap();
        assert_eq!(std::fs::read(root.join("dir/moved")).unwrap(), b"data");
        assert!(!root.join("file").exists());
    }

    /// chown on a read-write share reaches the host file: giving a file to another user
    /// needs root (CAP_CHOWN) on the host.
    #[test]
    #[ignore = "needs root: chown of a host file to another uid"]
    fn root_read_write_supports_chown() {
        let (dir, fs) = share(false);
        let ctx = Context::default();
        let file = fs.lookup(&ctx, ROOT_ID, &name("file")).unwrap().inode;
        let (owner, valid) = attr(SetattrValid::UID | SetattrValid::GID, |st| {
            st.st_uid = 1234;
            st.st_gid = 5678;
        });
        fs.setattr(&ctx, file, owner, None, valid).unwrap();
        let meta = std::fs::metadata(dir.as_path().join("file")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    }
}
