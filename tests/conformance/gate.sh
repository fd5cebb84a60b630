#!/usr/bin/env bash
# The compatibility gate of CI, for one kvmbox run of its own (scripts/test.sh runs it
# after the end-to-end box): the OCI runtime-tools suite for runc and runv side by side
# (run.sh --gate --gated-only: every file runc passes must pass for runv unless listed in
# exceptions.txt), then Docker driving runv (tests/e2e/docker.sh), then the network suite
# (tests/e2e/network.sh), then a leak check over all: no runv-vmm or runv-shim process,
# no mount that was not there at the start, and nothing under runv's default root. Ends
# with "N passed, N failed".
#
#   tests/kvmbox/kvmbox --env RUNV_RUNTIME_TOOLS_DIR=$(tests/conformance/build.sh) \
#     --env RUNTIME=/path/to/runv --env RUNV_KERNEL --env RUNV_INITRD -- tests/conformance/gate.sh
#
# COMPAT_DOC=FILE also writes the comparison table (docs/compatibility.md) there, with
# the Docker results appended.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../lib.sh"

RUNTIME=${RUNTIME:-$(command -v runv || true)}
[[ -n $RUNTIME && -x $RUNTIME ]] || { echo "gate.sh: no runv binary: set RUNTIME" >&2; exit 2; }
RUNC=$(command -v runc) || { echo "gate.sh: runc is missing (apt-get install runc)" >&2; exit 2; }
log=$(mktemp)
mounts_before=$(mktemp)
trap 'rm -f "$log" "$mounts_before"' EXIT
awk '{ print $5 }' /proc/self/mountinfo | sort >"$mounts_before"

passed=0 failed=0
# suite NAME CMD...: runs a suite that ends with "N passed, N failed" and adds it up.
suite() {
  local name=$1 last start=$SECONDS
  shift
  echo "# suite $name"
  "$@" 2>&1 | tee "$log"
  last=$(tail -n 1 "$log")
  echo "# suite $name: $((SECONDS - start)) s"
  if [[ $last =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    passed=$((passed + BASH_REMATCH[1])) failed=$((failed + BASH_REMATCH[2]))
  else
    echo "not ok - suite $name did not finish (last line: $last)"
    failed=$((failed + 1))
  fi
}

doc=()
[[ -n ${COMPAT_DOC:-} ]] && doc=(--write-doc "$COMPAT_DOC")
suite conformance "$here/run.sh" --gate --gated-only "${doc[@]}" "runc=$RUNC" "runv=$RUNTIME"
suite docker "$here/../e2e/docker.sh" "$RUNTIME"
if [[ -n ${COMPAT_DOC:-} ]]; then
  {
    echo
    echo "## Docker with runv"
    echo
    echo "Written by tests/conformance/gate.sh in the same box run, $(date -u '+%Y-%m-%d %H:%M UTC'):"
    echo "tests/e2e/docker.sh with $(dockerd --version 2>/dev/null | head -n 1) and"
    echo "\`dockerd --add-runtime runv=...\`: $(tail -n 1 "$log")."
    echo
    grep -E '^(not )?ok - ' "$log" | sed 's/^/- /'
  } >>"$COMPAT_DOC"
fi
# Networking (Docker's bridge, -p, embedded DNS, ctr --cni, a runtime alone in a namespace),
# runc first in each case, then runv; after docker.sh, whose dockerd keeps the host's
# network untouched.
suite network env RUNTIME="$RUNTIME" "$here/../e2e/network.sh"

# Leak check over both suites.
PASS=0 FAIL=0
procs=$(pgrep -a -x runv-vmm; pgrep -a -x runv-shim) # names of at most 15 characters, one at a time
check "leak check: no runv-vmm or runv-shim process left${procs:+ (found: $procs)}" test -z "$procs"
new_mounts=$(awk '{ print $5 }' /proc/self/mountinfo | sort | comm -13 "$mounts_before" -)
check "leak check: no mount left that was not there at the start${new_mounts:+ ($new_mounts)}" \
  test -z "$new_mounts"
check "leak check: nothing under runv's default root /run/runv" \
  test -z "$(ls -A /run/runv 2>/dev/null)"
passed=$((passed + PASS)) failed=$((failed + FAIL))
echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
