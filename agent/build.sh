#!/usr/bin/env bash
# Builds the static runv-agent (the guest's /init) and prints its path on the last line.
# Static glibc (+crt-static) and static libseccomp (libseccomp-dev ships libseccomp.a);
# only this package is built static, the rest of the workspace is not.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=x86_64-unknown-linux-gnu
RUSTFLAGS='-C target-feature=+crt-static' \
  LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu \
  cargo build --profile agent -q -p runv-agent --target "$target" >&2
dir=${CARGO_TARGET_DIR:-$root/target}
echo "$dir/$target/agent/runv-agent"
