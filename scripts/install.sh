#!/usr/bin/env bash
# Installs runv, and optionally registers it with Docker and containerd (docs/install.md).
#
#   scripts/install.sh [--prefix DIR] [--docker [DAEMON_JSON]] [--containerd [CONFIG_TOML]]
#   scripts/install.sh [--prefix DIR] --uninstall
#
# Installs runv, runv-shim, runv-vmm and hyperctl into PREFIX/bin (default /usr/local), the
# guest kernel and the agent initramfs into PREFIX/share/runv/{vmlinux,runv-initrd.img},
# and a commented /etc/runv/config.toml that names them (an existing one is kept). What is
# not built yet is built first (release binaries, guest kernel, static agent and its
# initramfs); RUNV_BIN_DIR, RUNV_KERNEL and RUNV_INITRD name prebuilt ones instead.
# Idempotent. Every file and registration it makes is listed in
# PREFIX/share/runv/install-manifest, which --uninstall reads to undo exactly that.
#
#   --docker     adds runv to DAEMON_JSON's "runtimes" (default /etc/docker/daemon.json),
#                merged with what is there, and sends SIGHUP to the dockerd that reads it
#                (dockerd reloads its runtimes; it is never restarted).
#   --containerd adds runv's runtime tables for the CRI plugin to CONFIG_TOML (default
#                /etc/containerd/config.toml), in place, between marker comments, after a
#                backup (CONFIG_TOML.runv-backup). containerd reads it when it next starts.
# RUNV_ETC (default /etc/runv) is where config.toml goes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

prefix=/usr/local uninstall="" docker="" containerd=""
while [[ $# -gt 0 ]]; do
  case $1 in
  --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
  --prefix=*) prefix=${1#*=}; shift ;;
  --uninstall) uninstall=1; shift ;;
  --docker)
    docker=/etc/docker/daemon.json
    if [[ ${2:-} != "" && ${2:-} != --* ]]; then docker=$2; shift; fi
    shift ;;
  --containerd)
    containerd=/etc/containerd/config.toml
    if [[ ${2:-} != "" && ${2:-} != --* ]]; then containerd=$2; shift; fi
    shift ;;
  -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
  *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ $prefix == /* ]] || prefix=$(pwd)/$prefix
etc=${RUNV_ETC:-/etc/runv}
share=$prefix/share/runv
manifest=$share/install-manifest
bins=(runv runv-shim runv-vmm hyperctl)
command -v python3 >/dev/null || { echo "install.sh: python3 is missing" >&2; exit 2; }

# record KIND PATH [HOW [RUNV]]: one manifest line (kept once). HOW is created or kept for
# a file install.sh edits.
record() {
  mkdir -p "$share"
  touch "$manifest"
  grep -qxF "$*" "$manifest" || echo "$*" >>"$manifest"
}

# recorded_how KIND PATH: the HOW (created or kept) an earlier run recorded for PATH.
recorded_how() {
  awk -v k="$1" -v p="$2" '$1 == k && $2 == p { print $3; exit }' "$manifest" 2>/dev/null
}

# dockerd_hup FILE: SIGHUP to every dockerd whose config file is FILE.
dockerd_hup() {
  local pid cfg
  for pid in $(pgrep -x dockerd || true); do
    cfg=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null |
      awk 'f { print; exit } /^--config-file=/ { sub(/^--config-file=/, ""); print; exit } /^--config-file$/ { f = 1 }')
    [[ ${cfg:-/etc/docker/daemon.json} -ef $1 ]] && kill -HUP "$pid" && echo "install.sh: dockerd $pid reloads $1"
  done
  return 0
}

# docker_json FILE add|remove RUNV: merges runv into FILE's runtimes, or takes it out.
docker_json() {
  python3 - "$@" <<'EOF'
import json, os, sys
path, action, runv = sys.argv[1:4]
try:
    with open(path) as f:
        text = f.read()
    conf = json.loads(text) if text.strip() else {}
except FileNotFoundError:
    conf = {}
if not isinstance(conf, dict):
    sys.exit(f"install.sh: {path}: not a JSON object")
runtimes = conf.setdefault("runtimes", {})
if action == "add":
    runtimes["runv"] = {"path": runv}
elif runtimes.get("runv", {}).get("path") == runv:
    # An empty "runtimes" stays: dockerd's reload only applies keys the file has, so
    # without it the running dockerd would keep runv.
    del runtimes["runv"]
os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
tmp = path + ".runv-tmp"
with open(tmp, "w") as f:
    json.dump(conf, f, indent=2)
    f.write("\n")
os.replace(tmp, path)
EOF
}

BEGIN_MARK="# runv: begin (added by runv's scripts/install.sh; --uninstall removes it)"
END_MARK="# runv: end"

# containerd_strip FILE: FILE without runv's marked block.
containerd_strip() {
  awk -v b="$BEGIN_MARK" -v e="$END_MARK" '$0 == b { skip = 1; next } $0 == e { skip = 0; next } !skip' "$1"
}

if [[ -n $uninstall ]]; then
  [[ -f $manifest ]] || { echo "install.sh: nothing installed under $prefix (no $manifest)" >&2; exit 1; }
  # Newest first; the manifest goes before the directories that held it.
  entries=$(tac "$manifest")
  rm -f "$manifest"
  while read -r kind path made runv; do
    case $kind in
    docker)
      docker_json "$path" remove "$runv"
      dockerd_hup "$path" ;;
    containerd)
      if [[ -f $path ]]; then
        containerd_strip "$path" >"$path.runv-tmp" && mv "$path.runv-tmp" "$path"
        # A file install.sh created holds only "version = 2" now: it goes; a backup
        # that the file is identical to again is not needed.
        if [[ $made == created ]] && [[ $(grep -v '^[[:space:]]*$' "$path") == "version = 2" ]]; then
          rm -f "$path"
        elif cmp -s "$path" "$path.runv-backup"; then
          rm -f "$path.runv-backup"
        fi
      fi
      echo "install.sh: runv's tables left $path; restart containerd to drop them" ;;
    file) rm -f "$path" ;;
    config)
      # Only as written: an edited config is the admin's now.
      if [[ -f $path && $(sha256sum <"$path" | cut -d' ' -f1) != "$made" ]]; then
        echo "install.sh: kept $path: it changed since it was written"
      else
        rm -f "$path"
      fi ;;
    dir) rmdir "$path" 2>/dev/null || echo "install.sh: kept $path: not empty" ;;
    esac
  done <<<"$entries"
  echo "install.sh: uninstalled runv from $prefix"
  exit 0
fi

# ---- what to install: prebuilt (RUNV_BIN_DIR, RUNV_KERNEL, RUNV_INITRD) or built now ----
bin_dir=${RUNV_BIN_DIR:-}
kernel=${RUNV_KERNEL:-}
initrd=${RUNV_INITRD:-}
need_lib=""
[[ -n $bin_dir && -n $kernel && -n $initrd ]] || need_lib=1
if [[ -n $need_lib ]]; then
  # shellcheck source=scripts/lib.sh
  source "$here/lib.sh"
  cd "$ROOT"
fi
if [[ -z $bin_dir ]]; then
  bin_dir=$CARGO_TARGET_DIR/release
  for b in "${bins[@]}"; do
    if [[ ! -x $bin_dir/$b ]]; then
      echo "install.sh: building runv's binaries (release)..." >&2
      cargo build --release -q -p runv-vmm -p runv-runtime -p runv-hyperctl
      break
    fi
  done
fi
if [[ -z $kernel ]]; then
  echo "install.sh: the guest kernel (cached after the first build)..." >&2
  kernel=$("$ROOT/guest-kernel/build.sh" | tail -n 1)
fi
if [[ -z $initrd ]]; then
  echo "install.sh: the agent initramfs (cached after the first build)..." >&2
  initrd=$(build_initramfs --no-busybox "$("$ROOT/agent/build.sh")" agent)
fi
for f in "${bins[@]/#/$bin_dir/}" "$kernel" "$initrd"; do
  [[ -f $f ]] || { echo "install.sh: $f is missing" >&2; exit 1; }
done

# ---- files ----------------------------------------------------------------------------
# The directories this makes, outermost first, so that --uninstall removes them (and
# only them) again.
new_dirs=()
for dir in "$prefix" "$prefix/bin" "$prefix/share" "$share" "$etc"; do
  [[ -d $dir ]] || new_dirs+=("$dir")
done
for dir in "${new_dirs[@]}"; do
  mkdir -p "$dir"
  record dir "$dir"
done
for b in "${bins[@]}"; do
  install -D -m 0755 "$bin_dir/$b" "$prefix/bin/$b"
  record file "$prefix/bin/$b"
done
install -D -m 0644 "$kernel" "$share/vmlinux"
record file "$share/vmlinux"
install -D -m 0644 "$initrd" "$share/runv-initrd.img"
record file "$share/runv-initrd.img"
if [[ ! -e $etc/config.toml ]]; then
  cat >"$etc/config.toml" <<EOF
# runv's configuration (docs/runtime.md, "Configuration"), written by scripts/install.sh.
# Every key is optional; these are the files installed under $prefix.
kernel = "$share/vmlinux"
initrd = "$share/runv-initrd.img"
vmm = "$prefix/bin/runv-vmm"
# VM size when neither annotations nor the spec's limits say.
# default_cpus = 1
# default_memory_mib = 256
# Bytes of guest console output kept in <root>/<id>/console.log.
# console_limit = 1048576
# Host memory (MiB) a sandbox may use beyond its guest RAM, and host tasks besides one
# per vCPU (docs/security.md, "Host resources").
# host_memory_overhead_mib = 64
# host_pids_limit = 256
EOF
  record config "$etc/config.toml" "$(sha256sum <"$etc/config.toml" | cut -d' ' -f1)"
  echo "install.sh: wrote $etc/config.toml"
else
  echo "install.sh: kept the existing $etc/config.toml"
fi

# ---- registrations ----------------------------------------------------------------------
if [[ -n $docker ]]; then
  made=$(recorded_how docker "$docker")
  [[ -n $made ]] || { [[ -e $docker ]] && made=kept || made=created; }
  docker_json "$docker" add "$prefix/bin/runv"
  record docker "$docker" "$made" "$prefix/bin/runv"
  dockerd_hup "$docker"
  echo "install.sh: Docker: runtime \"runv\" in $docker (docker run --runtime runv ...)"
fi
if [[ -n $containerd ]]; then
  made=kept
  if [[ ! -e $containerd ]]; then
    mkdir -p "$(dirname "$containerd")"
    echo 'version = 2' >"$containerd"
    made=created
  elif grep -qxF "$BEGIN_MARK" "$containerd"; then
    # Installed before: the block is replaced, and the backup of the original stays.
    made=$(recorded_how containerd "$containerd")
    made=${made:-kept}
  else
    cp -p "$containerd" "$containerd.runv-backup"
  fi
  {
    containerd_strip "$containerd"
    echo "$BEGIN_MARK"
    echo "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runv]"
    echo "  runtime_type = \"io.containerd.runc.v2\""
    echo "  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runv.options]"
    echo "    BinaryName = \"$prefix/bin/runv\""
    echo "$END_MARK"
  } >"$containerd.runv-tmp"
  mv "$containerd.runv-tmp" "$containerd"
  record containerd "$containerd" "$made"
  echo "install.sh: containerd: runtime handler \"runv\" in $containerd; restart containerd to use it"
fi
echo "install.sh: installed runv into $prefix; \`$prefix/bin/runv check\` says whether this host can run it"
