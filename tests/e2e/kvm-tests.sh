#!/usr/bin/env bash
# The workspace's kvm_ tests: Rust tests that need a working /dev/kvm, named kvm_... and
# ignored by a plain `cargo test` (#[ignore = "needs KVM: ..."]). Run inside tests/kvmbox.
# RUNV_KVM_TESTS: test executables, space-separated (scripts/test.sh passes every one of
# the workspace but the agent suites, which tests/e2e/agent.sh runs against a guest agent).
# Each runs its kvm_ tests one at a time (the box has one vCPU); one line per executable
# that has any, a comment line for the others.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../lib.sh"

: "${RUNV_KVM_TESTS:?set RUNV_KVM_TESTS to the test executables}"
EXE_TIMEOUT=${KVM_TESTS_EXE_TIMEOUT:-300}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

count=0 none=0
for exe in $RUNV_KVM_TESTS; do
  count=$((count + 1))
  base=$(basename "$exe")
  name=${base%-*} # without cargo's hash
  if [[ ! -x $exe ]]; then
    not_ok "$name: $exe is an executable"
    continue
  fi
  out=$work/$base.out
  # A hung executable is a failure here, never a stuck box.
  timeout -k 10 "$EXE_TIMEOUT" "$exe" --ignored kvm_ --test-threads=1 >"$out" 2>&1
  rc=$?
  ran=$(sed -n -E 's/^running ([0-9]+) tests?$/\1/p' "$out" | head -n 1)
  if [[ $rc == 0 && ${ran:-0} == 0 ]]; then
    echo "# $name: no kvm_ tests"
    none=$((none + 1))
  elif [[ $rc == 0 ]]; then
    ok "$name: $ran kvm_ tests"
  elif [[ $rc == 124 || $rc == 137 ]]; then
    not_ok "$name: kvm_ tests finished within $EXE_TIMEOUT s"
    show "$out"
  else
    not_ok "$name: kvm_ tests (exit $rc)"
    show "$out"
  fi
done
[[ $count -gt 0 ]] || not_ok "RUNV_KVM_TESTS names test executables"
echo "# $none of $count executables have no kvm_ tests"
finish
