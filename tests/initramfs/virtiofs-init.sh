#!/bin/sh
# Guest side of tests/e2e/virtiofs.sh: mounts the virtio-fs shares "rw" and "ro" and prints
# one "RUNV-FS ok|FAIL <what>" line per check, then powers off. The host prepared the
# files named here and checks what the guest wrote after the VM is gone.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
r=/mnt/rw o=/mnt/ro
mkdir -p $r $o

t() { # t DESCRIPTION COMMAND...
  d=$1
  shift
  if "$@"; then echo "RUNV-FS ok $d"; else echo "RUNV-FS FAIL $d"; fi
}
# erofs COMMAND...: the command fails with "Read-only file system".
erofs() { "$@" 2>&1 | grep -q 'Read-only file system'; }
# uptime in centiseconds
now() { read -r up _ </proc/uptime; echo "${up%.*}${up#*.}"; }

t "mount -t virtiofs rw $r" mount -t virtiofs rw $r
t "mount -t virtiofs ro $o" mount -t virtiofs ro $o
t "read a file the host wrote" [ "$(cat $r/host.txt)" = "written by the host" ]
t "write a file (the host reads it after the run)" sh -c "echo 'written by the guest' > $r/guest.txt"
t "read back what the guest wrote" [ "$(cat $r/guest.txt)" = "written by the guest" ]
t "rename" mv $r/a.txt $r/b.txt
t "renamed file keeps its contents, old name gone" [ "$(cat $r/b.txt)" = "a-content" -a ! -e $r/a.txt ]
t "hard link" ln $r/b.txt $r/hard.txt
t "hard link count is 2" [ "$(stat -c %h $r/b.txt)" = 2 ]
t "symlink" ln -s b.txt $r/soft
t "read through the symlink" [ "$(cat $r/soft)" = "a-content" -a "$(readlink $r/soft)" = b.txt ]
t "chmod 640" chmod 640 $r/b.txt
t "mode is 640" [ "$(stat -c %a $r/b.txt)" = 640 ]
t "chown 1234:5678" chown 1234:5678 $r/b.txt
t "owner is 1234:5678" [ "$(stat -c %u:%g $r/b.txt)" = 1234:5678 ]
t "xattr set, get, list" fstest xattr $r/b.txt
t "shared writable mmap" fstest mmap $r/mapped
t "O_DIRECT open and read" fstest direct $r/b.txt
t "mkdir, create inside, rmdir after unlink" sh -c "mkdir $r/d && echo x > $r/d/f && rm $r/d/f && rmdir $r/d"

# Escapes: .. of the share is the guest's /mnt; symlinks are resolved in the guest.
t "$r/.. is the guest's /mnt" [ "$(stat -c %i $r/..)" = "$(stat -c %i /mnt)" ]
t "ls $r/.. lists the guest's /mnt" [ "$(ls $r/..)" = "$(ls /mnt)" ]
t "absolute symlink to a host file outside the share does not reach it" sh -c "! cat $r/escape"
t "relative symlink to a host file outside the share does not reach it" sh -c "! cat $r/rel"
t "a ../../.. symlink leads to the guest's root" [ "$(ls $r/up/)" = "$(ls /)" ]

# Read-only share.
t "ro: reading works" [ "$(cat $o/host.txt)" = "read-only data" ]
t "ro: creating a file fails with EROFS" erofs touch $o/new
t "ro: writing a file fails with EROFS" erofs sh -c "echo x > $o/host.txt"
t "ro: mkdir fails with EROFS" erofs mkdir $o/d
t "ro: rm fails with EROFS" erofs rm -f $o/host.txt
t "ro: chmod fails with EROFS" erofs chmod 600 $o/host.txt
t "ro: rename fails with EROFS" erofs mv $o/host.txt $o/moved
t "ro: contents unchanged" [ "$(cat $o/host.txt)" = "read-only data" ]

# A host-side edit is seen within 1 s: prime the cache, ask the host to edit, then time
# from the moment its "done" marker is visible until the new contents are.
cat $r/edit.txt >/dev/null
touch $r/edit-request
i=0
while [ ! -e $r/edit-done ] && [ $i -lt 600 ]; do usleep 100000; i=$((i + 1)); done
t0=$(now)
while [ "$(cat $r/edit.txt)" != "edited on the host, longer" ] && [ $(($(now) - t0)) -lt 500 ]; do
  usleep 20000
done
dt=$(($(now) - t0))
t "host-side edit seen in ${dt}0 ms (limit 1000)" [ "$(cat $r/edit.txt)" = "edited on the host, longer" -a "$dt" -le 100 ]

sync
t "umount $r" umount $r
t "umount $o" umount $o
echo "RUNV-FS done"
poweroff -f
sleep 5
