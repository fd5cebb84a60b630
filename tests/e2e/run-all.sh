#!/usr/bin/env bash
# Runs every end-to-end suite (inside one kvmbox boot) and sums their results.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
passed=0 failed=0
# The runtime suites use RUNTIME (runv), HYPERCTL, RUNV_KERNEL and RUNV_INITRD from the
# environment; the conformance suite and Docker run in a box of their own
# (tests/conformance/gate.sh). kvm-tests.sh runs the workspace's kvm_ Rust tests
# (RUNV_KVM_TESTS); security.sh runs the attacker's cases with RUNV_VSOCKTEST; install.sh
# installs runv from those same files into a fresh prefix (scripts/install.sh).
suites=("$here"/boot.sh "$here"/blk.sh "$here"/virtiofs.sh "$here"/vsock.sh "$here"/kvm-tests.sh
  "$here"/agent.sh "$here"/runtime.sh "$here"/security.sh "$here"/containerd.sh "$here"/hyperctl.sh "$here"/hyperctl-pull.sh
  "$here"/install.sh)
for suite in "${suites[@]}"; do
  echo "# suite $(basename "$suite")"
  start=$SECONDS
  # A suite that stops making progress fails alone instead of using up the box's time.
  timeout -k 10 "${SUITE_TIMEOUT:-1200}" "$suite" 2>&1 | tee "$log"
  last=$(tail -n 1 "$log")
  echo "# suite $(basename "$suite"): $((SECONDS - start)) s"
  if [[ $last =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    passed=$((passed + BASH_REMATCH[1])) failed=$((failed + BASH_REMATCH[2]))
  else
    echo "not ok - suite $(basename "$suite") did not finish (last line: $last)"
    failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
