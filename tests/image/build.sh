#!/usr/bin/env bash
# Builds a one-layer busybox image from the host's static /bin/busybox alone (no network)
# as a tarball that both `ctr image import` and `docker load` take: an OCI image layout
# (oci-layout, index.json, blobs/sha256/...) plus the docker-archive manifest.json that
# points at the same blobs. Prints the tarball's path on stdout.
#
#   tests/image/build.sh            -> .../images/busybox-<key>.tar
#   IMAGE_REF (printed by --ref):  docker.io/runv/busybox:e2e
#
# Cached as ${RUNV_CACHE_DIR:-/var/cache/runv}/images/busybox-<key>.tar, where <key> is the
# first 16 hex digits of the SHA-256 of busybox's bytes, this script and the architecture;
# the tar is reproducible (fixed mtimes, owners and order), so equal inputs give equal bytes.
set -euo pipefail
BUSYBOX=${BUSYBOX:-/bin/busybox}
PYTHON=${PYTHON:-/usr/bin/python3}
REF=docker.io/runv/busybox:e2e

if [[ ${1:-} == --ref ]]; then
  echo "$REF"
  exit 0
fi
[[ $# == 0 ]] || { echo "usage: $0 [--ref]" >&2; exit 2; }
if ! file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked'; then
  echo "tests/image/build.sh: $BUSYBOX is not a static busybox (apt-get install busybox-static)" >&2
  exit 1
fi
case $(uname -m) in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) echo "tests/image/build.sh: unsupported machine $(uname -m)" >&2; exit 1 ;;
esac

key=$(cat "$BUSYBOX" "${BASH_SOURCE[0]}" <(echo "$arch") | sha256sum | cut -c1-16)
dir=${RUNV_CACHE_DIR:-/var/cache/runv}/images
out=$dir/busybox-$key.tar
if [[ -s $out ]]; then
  echo "$out"
  exit 0
fi
mkdir -p "$dir"
tmp=$(mktemp "$dir/.busybox-$key.XXXXXX")
trap 'rm -f "$tmp"' EXIT

"$PYTHON" - "$BUSYBOX" "$tmp" "$arch" "$REF" <<'PY'
import hashlib, io, json, subprocess, sys, tarfile

busybox, out, arch, ref = sys.argv[1:5]
MTIME = 946684800  # 2000-01-01, fixed so that the layer is reproducible


def info(name, kind, mode, size=0, link=""):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.size, ti.linkname, ti.mtime = kind, mode, size, link, MTIME
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti


def layer_tar():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d, mode in [("bin", 0o755), ("dev", 0o755), ("etc", 0o755), ("proc", 0o555),
                        ("root", 0o700), ("sys", 0o555), ("tmp", 0o1777), ("usr", 0o755)]:
            t.addfile(info(d + "/", tarfile.DIRTYPE, mode))
        body = open(busybox, "rb").read()
        t.addfile(info("bin/busybox", tarfile.REGTYPE, 0o755, len(body)), io.BytesIO(body))
        applets = subprocess.run([busybox, "--list"], check=True, capture_output=True,
                                 text=True).stdout.split()
        for a in sorted(set(applets) - {"busybox"}):
            t.addfile(info("bin/" + a, tarfile.SYMTYPE, 0o777, link="busybox"))
        for name, link in [("sbin", "bin"), ("usr/bin", "../bin"), ("usr/sbin", "../bin")]:
            t.addfile(info(name, tarfile.SYMTYPE, 0o777, link=link))
        for name, text in [
            ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"
                           "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
            ("etc/group", "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"),
        ]:
            data = text.encode()
            t.addfile(info(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    return buf.getvalue()


blobs = {}


def blob(data):
    digest = hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return "sha256:" + digest, len(data)


def dumps(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


layer = layer_tar()
layer_digest, layer_size = blob(layer)
config = {
    "architecture": arch,
    "os": "linux",
    "created": "2000-01-01T00:00:00Z",
    "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
               "Cmd": ["sh"], "WorkingDir": "/"},
    "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    "history": [{"created": "2000-01-01T00:00:00Z",
                 "created_by": "tests/image/build.sh: static busybox and its applet links"}],
}
config_digest, config_size = blob(dumps(config))
manifest = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": config_digest, "size": config_size},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest, "size": layer_size}],
}
manifest_digest, manifest_size = blob(dumps(manifest))
index = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [{"mediaType": manifest["mediaType"], "digest": manifest_digest,
                   "size": manifest_size,
                   "platform": {"architecture": arch, "os": "linux"},
                   "annotations": {"io.containerd.image.name": ref,
                                   "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]}}],
}
short = ref.split("/", 1)[1]  # docker's RepoTags drop the docker.io/ registry
docker_manifest = [{"Config": "blobs/sha256/" + config_digest[7:],
                    "RepoTags": [short],
                    "Layers": ["blobs/sha256/" + layer_digest[7:]]}]

with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
    def add(name, data, mode=0o644):
        t.addfile(info(name, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))
    t.addfile(info("blobs/", tarfile.DIRTYPE, 0o755))
    t.addfile(info("blobs/sha256/", tarfile.DIRTYPE, 0o755))
    for digest in sorted(blobs):
        add("blobs/sha256/" + digest, blobs[digest])
    add("oci-layout", dumps({"imageLayoutVersion": "1.0.0"}))
    add("index.json", dumps(index))
    add("manifest.json", dumps(docker_manifest))
PY
chmod 644 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
echo "$out"
