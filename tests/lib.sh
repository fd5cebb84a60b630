# shellcheck shell=bash
# Shared helpers of the shell test suites: TAP-like "ok"/"not ok" lines and a closing
# "N passed, N failed" line.
PASS=0
FAIL=0

ok() { echo "ok - $*"; PASS=$((PASS + 1)); }
not_ok() { echo "not ok - $*"; FAIL=$((FAIL + 1)); }

# check DESCRIPTION COMMAND...: one test line from a command's status.
check() {
  local desc=$1
  shift
  if "$@"; then ok "$desc"; else not_ok "$desc"; fi
}

# show_on_failure FILE...: prints files indented, for the diagnosis of a failed case.
show() {
  local f
  for f in "$@"; do
    echo "# --- $f"
    sed 's/^/#   /' "$f" | tail -n 40
  done
}

finish() {
  echo "$PASS passed, $FAIL failed"
  [[ $FAIL -eq 0 ]]
}

# containerd_config DIR SOCK [PLUGIN...]: a containerd 1.6 config (version 2) on stdout,
# with its root, state and plugin dirs under DIR, its sockets at SOCK(.ttrpc, .debug),
# no metrics, and the snapshotters this box has no use for disabled, with PLUGINs too.
# Callers append their own tables.
containerd_config() {
  local dir=$1 sock=$2 p list=""
  shift 2
  for p in io.containerd.snapshotter.v1.aufs io.containerd.snapshotter.v1.btrfs \
    io.containerd.snapshotter.v1.devmapper io.containerd.snapshotter.v1.zfs \
    io.containerd.tracing.processor.v1.otlp "$@"; do
    list+="${list:+, }\"$p\""
  done
  cat <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = [$list]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[debug]
  address = "$sock.debug"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
EOF
}
