# shellcheck shell=bash
# Helpers for the runtime suites (sourced): build a busybox OCI bundle from the host's
# static /bin/busybox (busybox-static) and write its config.json. The config is the one
# `runc spec` prints, written here from scratch (never by calling the runtime under test),
# with the changes a test asks for.
#
#   bundle_make DIR [OPTIONS] [--] CMD [ARGS...]
#     --tty                    process.terminal = true
#     --env NAME=VALUE         add to process.env (repeatable)
#     --cwd DIR                process.cwd
#     --hostname NAME          hostname (default: runv-e2e)
#     --cgroups-path PATH      linux.cgroupsPath
#     --annotation K=V         annotations (repeatable)
#     --prestart SCRIPT        a prestart hook: /bin/sh -c SCRIPT, run on the host
#     --patch JSON             merged into the config last (objects merge, the rest replaces)
#
# BUSYBOX (default /bin/busybox) must be a static binary: the rootfs holds nothing else.

BUSYBOX=${BUSYBOX:-/bin/busybox}
# /usr/bin/python3, not a pyenv shim that may sit first in PATH (3 s per start in kvmbox).
PYTHON=${PYTHON:-/usr/bin/python3}

# bundle_rootfs DIR: DIR/rootfs with busybox, one symlink per applet, /etc/passwd and group.
# Built once per busybox binary into a template under BUNDLE_CACHE (default
# ${TMPDIR:-/tmp}/runv-bundle-rootfs) and copied from there: one `cp -a` instead of one `ln`
# per applet, which in the emulated test box costs about 20 s a bundle.
bundle_rootfs() {
  local rootfs=$1/rootfs key tmpl build
  key=$(stat -L -c '%i-%s-%Y' "$BUSYBOX" 2>/dev/null) || {
    echo "bundle_rootfs: $BUSYBOX is missing (apt-get install busybox-static)" >&2
    return 1
  }
  tmpl=${BUNDLE_CACHE:-${TMPDIR:-/tmp}/runv-bundle-rootfs}/$key
  if [[ ! -d $tmpl ]]; then
    build=$tmpl.$$.$RANDOM
    mkdir -p "$build" && bundle_rootfs_build "$build" || { rm -rf "$build"; return 1; }
    # Another suite may have made it meanwhile: theirs stays, ours goes.
    mv -T "$build" "$tmpl" 2>/dev/null || rm -rf "$build"
  fi
  mkdir -p "$1" && cp -a "$tmpl" "$rootfs"
}

# bundle_rootfs_build DIR: the template's contents, made in DIR.
bundle_rootfs_build() {
  local rootfs=$1 applet
  if ! file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked'; then
    echo "bundle_rootfs: $BUSYBOX is not a static busybox (apt-get install busybox-static)" >&2
    return 1
  fi
  mkdir -p "$rootfs"/{bin,dev,etc,proc,root,sys,tmp} || return 1
  chmod 1777 "$rootfs/tmp"
  cp "$BUSYBOX" "$rootfs/bin/busybox" || return 1
  for applet in $("$BUSYBOX" --list); do
    [[ $applet == busybox ]] || ln -sf busybox "$rootfs/bin/$applet"
  done
  ln -sfn bin "$rootfs/sbin"
  mkdir -p "$rootfs/usr" && ln -sfn ../bin "$rootfs/usr/bin" && ln -sfn ../bin "$rootfs/usr/sbin"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
    >"$rootfs/etc/passwd"
  printf 'root:x:0:\ntty:x:5:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
}

# bundle_config DIR [OPTIONS] [--] CMD...: writes DIR/config.json (see the top of this file).
bundle_config() {
  local dir=$1
  shift
  "$PYTHON" - "$dir/config.json" "$@" <<'PY'
import json, sys

out, argv = sys.argv[1], sys.argv[2:]
caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
spec = {
    "ociVersion": "1.0.2-dev",
    "process": {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": ["sh"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
        "cwd": "/",
        "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted", "ambient")},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs", "readonly": False},
    "hostname": "runv-e2e",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ],
    "linux": {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
        "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                        "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                        "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                          "/proc/sysrq-trigger"],
    },
}


def merge(dst, src):
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            merge(dst[k], v)
        else:
            dst[k] = v


def die(msg):
    sys.exit("bundle_config: " + msg)


patches, i = [], 0
while i < len(argv):
    a = argv[i]
    if a == "--":
        i += 1
        break
    if not a.startswith("--"):
        break
    if a == "--tty":
        spec["process"]["terminal"] = True
        i += 1
        continue
    if i + 1 >= len(argv):
        die(a + " needs a value")
    v = argv[i + 1]
    i += 2
    if a == "--env":
        spec["process"]["env"].append(v)
    elif a == "--cwd":
        spec["process"]["cwd"] = v
    elif a == "--hostname":
        spec["hostname"] = v
    elif a == "--cgroups-path":
        spec["linux"]["cgroupsPath"] = v
    elif a == "--annotation":
        k, _, val = v.partition("=")
        spec.setdefault("annotations", {})[k] = val
    elif a == "--prestart":
        hooks = spec.setdefault("hooks", {}).setdefault("prestart", [])
        hooks.append({"path": "/bin/sh", "args": ["sh", "-c", v], "timeout": 30})
    elif a == "--patch":
        try:
            patches.append(json.loads(v))
        except ValueError as e:
            die("--patch %r: %s" % (v, e))
    else:
        die("unknown option " + a)
if argv[i:]:
    spec["process"]["args"] = argv[i:]
for p in patches:
    merge(spec, p)
with open(out, "w") as f:
    json.dump(spec, f, indent=2)
PY
}

# bundle_make DIR [OPTIONS] [--] CMD...: a fresh bundle (rootfs + config.json) in DIR.
bundle_make() {
  local dir=$1
  shift
  mkdir -p "$dir" && bundle_rootfs "$dir" && bundle_config "$dir" "$@"
}
