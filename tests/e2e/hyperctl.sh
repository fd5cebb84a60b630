#!/usr/bin/env bash
# hyperctl end to end: images from a docker-archive and an OCI layout, run flags
# (-e -w -u -v -i -t --cpus --memory), exit codes, --rm leaving nothing, -d (and -d --rm) with
# logs/stop/rm, ps, images/rmi, and a hostile archive. Boots VMs, so it runs in kvmbox:
#
#   tests/kvmbox/kvmbox --env HYPERCTL=/path/to/hyperctl --env RUNV_KERNEL=... \
#     --env RUNV_INITRD=... --env RUNV_VMM=... -- tests/e2e/hyperctl.sh
#
# runv (and runv-shim) must be next to hyperctl, or HYPERCTL_RUNV set. HYPERCTL_IMAGE may
# name the busybox archive (default: tests/image/build.sh builds it). Every hyperctl call
# is time-limited (HC_TIMEOUT, default 180 s); a temp --root is removed at exit.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../lib.sh"

HYPERCTL=${HYPERCTL:-$(command -v hyperctl || true)}
if [[ -z $HYPERCTL || ! -x $HYPERCTL ]]; then
  echo "hyperctl.sh: no hyperctl binary: set HYPERCTL" >&2
  exit 2
fi
for tool in python3 timeout script; do
  command -v "$tool" >/dev/null || { echo "hyperctl.sh: $tool is missing" >&2; exit 2; }
done
T=${HC_TIMEOUT:-180}
IMAGE_TAR=${HYPERCTL_IMAGE:-$("$here/../image/build.sh")} || exit 2
REF=$("$here/../image/build.sh" --ref) # docker.io/runv/busybox:e2e
SHORT=runv/busybox:e2e

work=$(mktemp -d "${TMPDIR:-/tmp}/hyperctl-e2e.XXXXXX")
root=$work/root
RUNV=${HYPERCTL_RUNV:-$(dirname "$HYPERCTL")/runv}
echo "# hyperctl: $HYPERCTL, runv: $RUNV, image: $IMAGE_TAR"

cleanup() {
  local n
  for n in "$root/containers"/*; do
    [[ -e $n ]] || continue
    n=${n##*/}
    timeout -k 2 30 "$HYPERCTL" --root "$root" rm -f "$n" >/dev/null 2>&1
  done
  for n in $(timeout 30 "$RUNV" --root "$root/runv" list -q 2>/dev/null); do
    timeout -k 2 30 "$RUNV" --root "$root/runv" delete --force "$n" >/dev/null 2>&1
  done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# hc ARGS...: hyperctl with the test root, killed after $T seconds.
hc() { timeout -k 5 "$T" "$HYPERCTL" --root "$root" "$@"; }

# out_is WHAT WANT CMD...: CMD exits 0 and its stdout is WANT.
out_is() {
  local what=$1 want=$2 rc got
  shift 2
  "$@" >"$work/o.out" 2>"$work/o.err"
  rc=$?
  got=$(cat "$work/o.out")
  if [[ $rc == 0 && $got == "$want" ]]; then
    ok "$what"
  else
    not_ok "$what: want exit 0 and '$want', got exit $rc and '$got'"
    show "$work/o.err"
  fi
}

# fails_with WHAT PATTERN CMD...: CMD fails and its stderr matches PATTERN.
fails_with() {
  local what=$1 pattern=$2 rc
  shift 2
  "$@" </dev/null >"$work/f.out" 2>"$work/f.err"
  rc=$?
  if [[ $rc != 0 && $rc != 124 ]] && grep -Eq -- "$pattern" "$work/f.err"; then
    ok "$what (exit $rc: $(head -c 160 "$work/f.err" | tr '\n' ' '))"
  else
    not_ok "$what: want a failure matching '$pattern', got exit $rc"
    show "$work/f.out" "$work/f.err"
  fi
}

# nothing_left WHAT NAME: no hyperctl directory, no runv state, no VMM or shim.
nothing_left() {
  local what=$1 name=$2 left=
  [[ -e $root/containers/$name ]] && left+=" $root/containers/$name"
  [[ -e $root/runv/$name ]] && left+=" $root/runv/$name"
  if [[ -n ${KVMBOX:-} ]] && pgrep -x 'runv-(vmm|shim)' >/dev/null; then
    left+=" processes: $(pgrep -a -x 'runv-(vmm|shim)' | tr '\n' ' ')"
  fi
  if [[ -z $left ]]; then ok "$what: nothing left"; else not_ok "$what: left:$left"; fi
}

# --- images
out_is "load a docker-archive" "Loaded image: $REF" hc load -i "$IMAGE_TAR"
hc images >"$work/images"
check "images lists $REF" grep -Eq "^docker.io/runv/busybox +e2e +sha256:[0-9a-f]{12} " "$work/images"

# An OCI image layout directory: the archive without docker's manifest.json.
layout=$work/layout
mkdir -p "$layout" && tar -xf "$IMAGE_TAR" -C "$layout" && rm -f "$layout/manifest.json"
out_is "run from an OCI layout directory" "from-layout" hc run --rm "$layout" echo from-layout
out_is "run from a docker-archive path" "from-archive" hc run --rm "$IMAGE_TAR" echo from-archive
out_is "run by name, the image's default command (sh) reading a script on stdin" "sh-ok" \
  bash -c "echo 'echo sh-ok' | timeout -k 5 $T $HYPERCTL --root $root run --rm -i $SHORT"

# --- exit codes and flags
hc run --rm --name ex "$SHORT" sh -c 'exit 7' >/dev/null 2>"$work/ex.err"
rc=$?
if [[ $rc == 7 ]]; then ok "exit code 7 propagated"; else not_ok "exit code: want 7, got $rc"; show "$work/ex.err"; fi
nothing_left "--rm after exit 7" ex
out_is "-e, -w, -u applied" "bar /tmp 65534:65534" \
  hc run --rm -e FOO=bar -w /tmp -u nobody "$SHORT" sh -c 'echo $FOO $(pwd) $(id -u):$(id -g)'
out_is "the image's Env is kept beside -e" "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  hc run --rm -e X=1 "$SHORT" sh -c 'echo $PATH'
vol=$work/vol
mkdir -p "$vol" && echo host-data >"$vol/f"
out_is "-v read-only: the host file is visible" "host-data" hc run --rm -v "$vol:/data:ro" "$SHORT" cat /data/f
hc run --rm -v "$vol:/data:ro" "$SHORT" sh -c 'echo x >/data/new' >/dev/null 2>&1
rc=$?
if [[ $rc != 0 && ! -e $vol/new ]]; then ok "-v :ro refuses writes (exit $rc)"; else not_ok "-v :ro: exit $rc, $vol/new exists: $([[ -e $vol/new ]] && echo yes || echo no)"; fi
out_is "-v read-write: a write reaches the host" "" hc run --rm -v "$vol:/data" "$SHORT" sh -c 'echo from-guest >/data/new'
check "-v read-write: the host sees the file" grep -qx from-guest "$vol/new"
# runv caps vCPUs at the host's CPUs (kvmbox has 1 unless --smp).
want_cpus=$(($(nproc) < 2 ? $(nproc) : 2))
out_is "--cpus 2 (host has $(nproc)): $want_cpus vCPUs" "$want_cpus" hc run --rm --cpus 2 "$SHORT" nproc
mem=$(hc run --rm --memory 320 "$SHORT" sh -c "awk '/MemTotal/ {print int(\$2/1024)}' /proc/meminfo")
if [[ $mem =~ ^[0-9]+$ ]] && ((mem > 200 && mem <= 320)); then ok "--memory 320: MemTotal $mem MiB"; else not_ok "--memory 320: MemTotal '$mem' MiB"; fi
out_is "stdin is /dev/null without -i" "" bash -c "echo piped | timeout -k 5 $T $HYPERCTL --root $root run --rm $SHORT cat"
out_is "-i passes stdin" "piped" bash -c "echo piped | timeout -k 5 $T $HYPERCTL --root $root run --rm -i $SHORT cat"

# -t: under script(1), which gives hyperctl a terminal of 33x77.
timeout -k 5 "$T" script -qec "stty rows 33 cols 77; $HYPERCTL --root $root run --rm -t $SHORT sh -c 'tty; stty size; exit 3'" /dev/null >"$work/tty.out" 2>&1
rc=$?
tr -d '\r' <"$work/tty.out" >"$work/tty.txt"
if grep -q '^/dev/pts/' "$work/tty.txt" && grep -qx '33 77' "$work/tty.txt"; then
  ok "-t: a terminal with the caller's window size"
else
  not_ok "-t: want /dev/pts/N and '33 77'"
  show "$work/tty.txt"
fi
[[ $rc == 3 ]] && ok "-t: exit code 3 propagated" || not_ok "-t: exit code want 3, got $rc"

# --- a kept foreground container
hc run --name kept "$SHORT" sh -c 'exit 3' >/dev/null 2>&1
hc ps -a >"$work/ps"
check "ps -a shows the exited container" grep -Eq '^kept +docker.io/runv/busybox:e2e +"sh -c exit 3" +Exited \(3\)' "$work/ps"
hc ps >"$work/ps"
check "ps without -a hides it" bash -c "! grep -q '^kept ' '$work/ps'"
fails_with "a taken name is refused" 'name "kept" is already in use' hc run --name kept "$SHORT" true
fails_with "logs of a foreground container" 'ran in the foreground' hc logs kept
out_is "rm of an exited container" "kept" hc rm kept
nothing_left "rm kept" kept

# --- detached
out_is "run -d prints the name" "bg" hc run -d --name bg "$SHORT" sh -c \
  'echo started; echo to-stderr >&2; trap "echo got-term; exit 0" TERM; while :; do sleep 1; done'
for _ in $(seq 1 100); do grep -q started "$root/containers/bg/log" 2>/dev/null && break; sleep 0.2; done
hc ps >"$work/ps"
check "ps shows bg running" grep -Eq '^bg +.* Running ' "$work/ps"
hc logs bg >"$work/logs"
check "logs: stdout and stderr" bash -c "grep -qx started '$work/logs' && grep -qx to-stderr '$work/logs'"
fails_with "rm of a running container is refused" 'is running' hc rm bg
out_is "stop (the container takes SIGTERM)" "bg" hc stop bg
hc logs bg >"$work/logs"
check "logs after stop show the trap ran" grep -qx got-term "$work/logs"
hc ps -a >"$work/ps"
check "ps -a shows bg exited" grep -Eq '^bg +.* Exited ' "$work/ps"
out_is "rm bg" "bg" hc rm bg
nothing_left "-d, stop, rm" bg

hc run -d --name stubborn "$SHORT" sh -c 'trap "" TERM; while :; do sleep 1; done' >/dev/null
start=$SECONDS
out_is "stop -t 2 of a container ignoring SIGTERM" "stubborn" hc stop -t 2 stubborn
took=$((SECONDS - start))
((took >= 2)) && ok "stop waited the grace period (${took} s) before SIGKILL" || not_ok "stop took ${took} s"
out_is "rm stubborn" "stubborn" hc rm stubborn
hc run -d --name forced "$SHORT" sleep 1000 >/dev/null
out_is "rm -f of a running container" "forced" hc rm -f forced
nothing_left "rm -f" forced

# --- run -d --rm: a watcher removes the container once it stops
# gone_within SECS NAME: polls until the container and its watcher are gone.
gone_within() {
  local deadline=$((SECONDS + $1))
  while ((SECONDS < deadline)); do
    [[ ! -e $root/containers/$2 ]] && ! pgrep -f -- "__autoremove $2\$" >/dev/null && return 0
    sleep 0.5
  done
  return 1
}
out_is "run -d --rm prints the name" "autorm" hc run -d --rm --name autorm "$SHORT" sh -c 'sleep 3'
check "run -d --rm: the container runs until its process ends" test -e "$root/containers/autorm"
check "run -d --rm: removed after its process exits (and the watcher ended)" gone_within 120 autorm
nothing_left "-d --rm, exited" autorm
hc run -d --rm --name autostop "$SHORT" sleep 1000 >/dev/null
out_is "stop of a -d --rm container" "autostop" hc stop -t 1 autostop
check "run -d --rm: removed after stop" gone_within 120 autostop
nothing_left "-d --rm, stopped" autostop

# --- bad input leaves nothing
fails_with "unknown image" 'image "nosuch:1": not in the store' hc run --name n1 nosuch:1 true
fails_with "bad -v" '-v relative:/x' hc run --name n2 -v relative:/x "$SHORT" true
fails_with "bad -w" 'working directory' hc run --name n3 -w rel "$SHORT" true
fails_with "unknown user" 'nosuchuser' hc run --name n4 -u nosuchuser "$SHORT" true
fails_with "-d with -t" 'cannot be combined' hc run -d -t --name n5 "$SHORT" true
hc run --rm --name n6 "$SHORT" /no/such/binary >/dev/null 2>"$work/n6.err"
rc=$?
[[ $rc != 0 ]] && ok "a missing command fails (exit $rc)" || not_ok "a missing command: exit 0"
show "$work/n6.err"
for n in n1 n2 n3 n4 n5 n6; do nothing_left "failed run $n" "$n"; done
# A run killed while preparing its bundle leaves a directory without a record: rm frees it.
mkdir -p "$root/containers/orphan/bundle"
out_is "rm of a half-made container" "orphan" hc rm orphan
fails_with "rm of an unknown container" 'no such container: ghost' hc rm ghost

# --- rmi
hc run -d --name user "$SHORT" sleep 1000 >/dev/null
fails_with "rmi while a container uses the image" 'used by container\(s\) user' hc rmi "$SHORT"
hc rm -f user >/dev/null
# The layout and archive runs named the same image; rmi every name.
hc images | awk 'NR > 1 {print ($2 == "<none>" ? $1 : $1 ":" $2)}' >"$work/names"
while read -r n; do hc rmi "$n" >/dev/null 2>"$work/rmi.err" || { not_ok "rmi $n"; show "$work/rmi.err"; }; done <"$work/names"
check "rmi: no image left" bash -c "[[ \$(timeout 30 $HYPERCTL --root $root images | wc -l) == 1 ]]"
left=$(find "$root/images/blobs/sha256" "$root/images/layers" -mindepth 1 2>&1)
[[ -z $left ]] && ok "rmi: the store's blobs and layers are gone" || not_ok "rmi: left in the store: $left"

# --- a hostile archive: a layer entry ../evil
python3 - "$work/evil.tar" <<'PY'
import hashlib, io, json, sys, tarfile

def tar_bytes(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in entries:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()

blobs = {}
def blob(data):
    d = hashlib.sha256(data).hexdigest()
    blobs[d] = data
    return "sha256:" + d, len(data)

def dumps(o):
    return json.dumps(o).encode()

layer = tar_bytes([("ok", b"fine\n"), ("../evil", b"escaped\n"), ("a/../../evil2", b"escaped\n")])
ld, ls = blob(layer)
cd, cs = blob(dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["true"]},
                     "rootfs": {"type": "layers", "diff_ids": [ld]}}))
md, ms = blob(dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                     "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
                     "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}]}))
index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
         "digest": md, "size": ms, "annotations": {"io.containerd.image.name": "docker.io/runv/evil:1"}}]}
with tarfile.open(sys.argv[1], "w") as t:
    for name, data in [("oci-layout", dumps({"imageLayoutVersion": "1.0.0"})), ("index.json", dumps(index))] + \
            [("blobs/sha256/" + d, b) for d, b in blobs.items()]:
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
PY
fails_with "an archive with a ../evil layer entry is refused" '\.\./evil' hc run --rm --name evil "$work/evil.tar"
found=$(find "$work" \( -name evil -o -name evil2 \) 2>/dev/null | head -5)
[[ -z $found ]] && ok "nothing named evil appeared anywhere under the test directory" || not_ok "evil entries written: $found"
nothing_left "hostile archive" evil

finish
