#!/usr/bin/env bash
# Builds a busybox initramfs (uncompressed newc cpio) around an init script.
#   tests/initramfs/build.sh [--no-busybox] INIT_SCRIPT OUT.cpio [FILE:GUEST_PATH]...
# The guest gets /bin/busybox (Debian's busybox-static) with its applets linked in /bin,
# INIT_SCRIPT as /init, and each extra FILE at GUEST_PATH. Uncompressed: decompressing
# costs more guest time than copying the bytes costs the VMM. --no-busybox leaves busybox
# out (runv's agent image: the agent runs no guest program, and the guest keeps its
# initramfs in RAM, so every byte is memory per sandbox).
set -euo pipefail

with_busybox=1
if [[ ${1:-} == --no-busybox ]]; then
  with_busybox=
  shift
fi
if [[ $# -lt 2 ]]; then
  echo "usage: $0 [--no-busybox] INIT_SCRIPT OUT.cpio [FILE:GUEST_PATH]..." >&2
  exit 2
fi
init=$1 out=$2
shift 2
[[ -f $init ]] || { echo "$0: init script $init not found" >&2; exit 1; }
busybox=/bin/busybox
if [[ -n $with_busybox ]] && { ! "$busybox" --list >/dev/null 2>&1 || ldd "$busybox" >/dev/null 2>&1; }; then
  echo "$0: $busybox is missing or not static; install Debian's busybox-static" >&2
  exit 1
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,run,mnt,etc}
if [[ -n $with_busybox ]]; then
  cp "$busybox" "$root/bin/busybox"
  for applet in $("$busybox" --list); do
    [[ $applet == busybox ]] || ln -s busybox "$root/bin/$applet"
  done
fi
install -m 0755 "$init" "$root/init"
for spec in "$@"; do
  src=${spec%%:*} dst=${spec#*:}
  [[ -f $src ]] || { echo "$0: extra file $src not found" >&2; exit 1; }
  mkdir -p "$root/$(dirname "$dst")"
  cp -p "$src" "$root/$dst"
done
tmp=$(mktemp "$out.XXXXXX")
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner 0:0 --quiet) > "$tmp"
mv -f "$tmp" "$out"
echo "$out"
