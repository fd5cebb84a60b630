#!/usr/bin/env bash
# Build the runv guest kernel (an uncompressed x86_64 vmlinux with a PVH entry
# note) from Debian's linux-source-6.1 and the *.fragment files beside this
# script, and cache it outside the source tree.
#
# Usage: guest-kernel/build.sh
#   Progress goes to stderr. The LAST line on stdout is the absolute path of the
#   cached vmlinux:
#     ${RUNV_CACHE_DIR:-/var/cache/runv}/guest-kernel/<key>/vmlinux
#   with the final kernel config beside it (<key>/config) and the exact inputs
#   of the key (<key>/key.txt).
#
# Environment:
#   RUNV_CACHE_DIR   cache root (default /var/cache/runv)
#   RUNV_VERBOSE=1   stream the full kbuild output to stderr
#   TMPDIR           where the source is extracted and built (~1.5 GB, removed
#                    afterwards)
#
# The key is a hash of: every *.fragment (name + content), the installed
# linux-source-6.1 package version, this script, and the C compiler version.
# A warm cache hit does no extraction and returns immediately. A cold build
# happens in a temporary directory and the cache entry appears with a single
# rename(2) at the end, so an interrupted build never leaves a partial entry.
# See docs/guest-kernel.md.
set -euo pipefail

# Keep stdout for the result; everything else (including tools' output) goes
# to stderr.
exec 3>&1 1>&2

log() { printf 'guest-kernel: %s\n' "$*" >&2; }
die() { printf 'guest-kernel: ERROR: %s\n' "$*" >&2; exit 1; }

SRC_PKG=linux-source-6.1
TARBALL=/usr/src/${SRC_PKG}.tar.xz
ARCH=x86_64
export ARCH

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
self="$here/$(basename "${BASH_SOURCE[0]}")"
cache_root=$(realpath -m "${RUNV_CACHE_DIR:-/var/cache/runv}/guest-kernel")

[[ "$(uname -m)" == x86_64 ]] || die "only native x86_64 builds are supported (host is $(uname -m))"

shopt -s nullglob
fragments=("$here"/*.fragment)
shopt -u nullglob
((${#fragments[@]})) || die "no *.fragment files in $here"

as_root() {
	if [[ $(id -u) -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		die "need root to run: $*"
	fi
}

apt_install() {
	log "installing with apt-get: $*"
	if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2; then
		as_root apt-get update >&2
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2
	fi
}

pkg_version() {
	dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null |
		awk '$3 == "installed" { print $4 }'
}

# --- Build dependencies --------------------------------------------------------
ensure_build_deps() {
	local need_pkgs=() pair
	for pair in make:make gcc:gcc bc:bc bison:bison flex:flex cpio:cpio perl:perl \
		xz:xz-utils readelf:binutils strip:binutils setsid:util-linux flock:util-linux; do
		command -v "${pair%%:*}" >/dev/null 2>&1 || need_pkgs+=("${pair#*:}")
	done
	[[ -f /usr/include/libelf.h || -f /usr/include/elfutils/libelf.h || -f /usr/include/libelf/libelf.h ]] ||
		need_pkgs+=(libelf-dev)
	[[ -f /usr/include/openssl/opensslv.h ]] || need_pkgs+=(libssl-dev)
	if ((${#need_pkgs[@]})); then
		# shellcheck disable=SC2207
		need_pkgs=($(printf '%s\n' "${need_pkgs[@]}" | sort -u))
		apt_install "${need_pkgs[@]}"
	fi
}

# --- Source package and its version (part of the cache key) -----------------
if [[ ! -f $TARBALL ]]; then
	log "$TARBALL missing"
	apt_install "$SRC_PKG"
	[[ -f $TARBALL ]] || die "$SRC_PKG installed but $TARBALL is still missing"
fi
src_version=$(pkg_version "$SRC_PKG" || true)
if [[ -z $src_version ]]; then
	# Tarball present without a dpkg record (copied in by hand): key on its
	# content instead.
	log "$SRC_PKG is not a dpkg-installed package; keying on the tarball hash"
	src_version="tarball-sha256:$(sha256sum "$TARBALL" | cut -d' ' -f1)"
fi

CC=${CC:-gcc}
# The compiler version is part of the key: on a fresh machine install the
# toolchain before computing it, or the first key would say "unknown".
command -v "$CC" >/dev/null 2>&1 || ensure_build_deps
cc_version=$("$CC" --version 2>/dev/null | head -n1 || true)

# --- Cache key ---------------------------------------------------------------
key_material() {
	echo "runv guest-kernel cache key v1"
	echo "source-package: $SRC_PKG $src_version"
	echo "compiler: ${cc_version:-unknown}"
	echo "build.sh: $(sha256sum "$self" | cut -d' ' -f1)"
	local f
	for f in "${fragments[@]}"; do
		echo "fragment: $(basename "$f") $(sha256sum "$f" | cut -d' ' -f1)"
	done
}
key=$(key_material | sha256sum | cut -c1-24)
entry="$cache_root/$key"

if [[ -f $entry/vmlinux && -f $entry/config ]]; then
	log "cache hit: $entry"
	echo "$entry/vmlinux" >&3
	exit 0
fi

# --- Fragment parsing (done before any expensive work) ----------------------
# Every meaningful fragment line is `CONFIG_X=value` or `# CONFIG_X is not
# set`. Anything else that is not blank or a comment is a typo: fail.
declare -A want=()
declare -A want_from=()
for f in "${fragments[@]}"; do
	n=0
	while IFS= read -r line || [[ -n $line ]]; do
		n=$((n + 1))
		line=${line%$'\r'}
		if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
			sym=${BASH_REMATCH[1]} val=${BASH_REMATCH[2]}
		elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set[[:space:]]*$ ]]; then
			sym=${BASH_REMATCH[1]} val=n
		elif [[ $line =~ ^[[:space:]]*(#.*)?$ ]]; then
			continue
		else
			die "$(basename "$f"):$n: not a config line or comment: $line"
		fi
		if [[ -n ${want[$sym]+x} && ${want[$sym]} != "$val" ]]; then
			die "$sym set to '${want[$sym]}' in ${want_from[$sym]} and to '$val' in $(basename "$f"):$n"
		fi
		want[$sym]=$val
		want_from[$sym]="$(basename "$f"):$n"
	done <"$f"
done
log "${#want[@]} options requested by ${#fragments[@]} fragment(s)"

ensure_build_deps

# --- Serialise cold builds, re-check the cache under the lock ----------------
as_mkdir() { mkdir -p "$1" 2>/dev/null || as_root mkdir -p "$1"; }
as_mkdir "$cache_root"
[[ -w $cache_root ]] || die "$cache_root is not writable (set RUNV_CACHE_DIR)"
exec 9>"$cache_root/.lock"
if ! flock -n 9; then
	log "another build holds $cache_root/.lock; waiting"
	flock 9
fi
if [[ -f $entry/vmlinux && -f $entry/config ]]; then
	log "cache hit after waiting: $entry"
	echo "$entry/vmlinux" >&3
	exit 0
fi
# Staging dirs left by a build that was SIGKILLed. Only lock holders create
# them, so none of these belongs to a running build.
rm -rf "$cache_root"/.tmp-*

work=$(mktemp -d "${TMPDIR:-/tmp}/runv-guest-kernel.XXXXXX")
stage=$(mktemp -d "$cache_root/.tmp-$key.XXXXXX")
make_pid=
cleanup() {
	local rc=$?
	# make runs in its own session/process group: stop it and its compilers.
	[[ -n $make_pid ]] && kill -TERM -- "-$make_pid" 2>/dev/null || true
	[[ -n $make_pid ]] && wait "$make_pid" 2>/dev/null || true
	rm -rf "$work" "$stage"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

start=$SECONDS
log "cold build for key $key ($SRC_PKG $src_version, $(nproc) CPUs)"
log "extracting $TARBALL into $work"
src="$work/src"
mkdir "$src"
tar -xf "$TARBALL" -C "$src" --strip-components=1
log "extracted in $((SECONDS - start))s"

# --- Configure -----------------------------------------------------------------
kmake() { make -C "$src" ARCH="$ARCH" CC="$CC" "$@"; }
kmake tinyconfig >"$work/config.log" 2>&1 || { cat "$work/config.log"; die "make tinyconfig failed"; }
(cd "$src" && scripts/kconfig/merge_config.sh -m .config "${fragments[@]}") >>"$work/config.log" 2>&1 ||
	{ cat "$work/config.log"; die "merge_config.sh failed"; }
kmake olddefconfig >>"$work/config.log" 2>&1 || { cat "$work/config.log"; die "make olddefconfig failed"; }

# Verify that every requested option survived. merge_config.sh only warns (and
# olddefconfig is silent) when Kconfig drops a value because a dependency is
# missing, is selected on by something else, or the symbol does not exist.
config="$src/.config"
bad=0
for sym in $(printf '%s\n' "${!want[@]}" | sort); do
	val=${want[$sym]}
	got=$(grep -E "^$sym=" "$config" | head -n1 || true)
	if [[ $val == n ]]; then
		if [[ -n $got ]]; then
			log "NOT APPLIED: $sym should be unset (${want_from[$sym]}) but final .config has $got"
			bad=1
		fi
	elif [[ $got != "$sym=$val" ]]; then
		if grep -qE "^# $sym is not set" "$config"; then
			got="# $sym is not set"
		elif ! grep -qE "^config ${sym#CONFIG_}\$" -r "$src" --include='Kconfig*' 2>/dev/null; then
			got="(no such symbol in this kernel)"
		else
			got=${got:-"(absent: dependencies not met)"}
		fi
		log "NOT APPLIED: $sym=$val (${want_from[$sym]}) -> final .config: $got"
		bad=1
	fi
done
((bad == 0)) || die "the fragment(s) did not fully apply; fix the dependencies above"
log "all ${#want[@]} requested options are in the final .config"
grep -q '^CONFIG_MODULES=y' "$config" && die "CONFIG_MODULES ended up enabled"

# --- Build ---------------------------------------------------------------------
jobs=$(nproc)
log "building vmlinux with -j$jobs (full log: $work/build.log; RUNV_VERBOSE=1 streams it)"
build_start=$SECONDS
export KBUILD_BUILD_USER=runv KBUILD_BUILD_HOST=runv
if [[ ${RUNV_VERBOSE:-0} == 1 ]]; then
	kmake -j"$jobs" vmlinux 2>&1 | tee "$work/build.log" >&2 || die "kernel build failed"
else
	# setsid: own process group, so cleanup can stop every compiler job. (A
	# background job of a non-interactive shell is not a group leader, so
	# setsid does not fork and $! is the group id.)
	setsid make -C "$src" ARCH="$ARCH" CC="$CC" -j"$jobs" vmlinux >"$work/build.log" 2>&1 &
	make_pid=$!
	last=$SECONDS
	while kill -0 "$make_pid" 2>/dev/null; do
		sleep 1
		if ((SECONDS - last >= 30)); then
			last=$SECONDS
			log "  ... $((SECONDS - build_start))s, $(grep -c '^  CC ' "$work/build.log" || true) files compiled"
		fi
	done
	if ! wait "$make_pid"; then
		make_pid=
		tail -n 60 "$work/build.log" >&2
		die "kernel build failed (last 60 lines above)"
	fi
	make_pid=
fi
build_secs=$((SECONDS - build_start))
log "vmlinux built in ${build_secs}s"

# --- Check and stage the result ---------------------------------------------
vmlinux="$src/vmlinux"
# (Capture tool output first: `readelf | grep -q` can fail under pipefail.)
elf_header=$(readelf -h "$vmlinux")
grep -Eq 'Class:[[:space:]]+ELF64' <<<"$elf_header" || die "vmlinux is not ELF64"
grep -Eq 'Type:[[:space:]]+EXEC' <<<"$elf_header" || die "vmlinux is not an executable"
# XEN_ELFNOTE_PHYS32_ENTRY (type 18 = 0x12) in a note owned by "Xen": the PVH
# entry point. readelf prints it either by name or as an unknown type 0x12.
elf_notes=$(readelf -n "$vmlinux")
grep -Eq '^[[:space:]]*Xen[[:space:]].*(PHYS32_ENTRY|0x0*12\))' <<<"$elf_notes" ||
	die "vmlinux has no Xen PVH note (XEN_ELFNOTE_PHYS32_ENTRY); is CONFIG_PVH set?"

strip --strip-debug -o "$stage/vmlinux" "$vmlinux"
cp "$config" "$stage/config"
{
	key_material
	echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) CPUs, make vmlinux took ${build_secs}s"
} >"$stage/key.txt"
chmod 0644 "$stage/vmlinux" "$stage/config" "$stage/key.txt"
chmod 0755 "$stage"
# Data on disk before the rename makes it visible.
sync "$stage/vmlinux" "$stage/config" "$stage/key.txt"

# Atomic publish: rename(2) of the staged directory onto the entry name.
if ! mv -T "$stage" "$entry" 2>/dev/null; then
	[[ -f $entry/vmlinux && -f $entry/config ]] || die "could not move $stage to $entry"
	log "another build published $entry first; keeping it"
fi
log "done in $((SECONDS - start))s: $(stat -c %s "$entry/vmlinux") bytes"
echo "$entry/vmlinux" >&3
