#!/usr/bin/env bash
# Every test of the project, as CI runs it (.ci/run calls this): formatting, lints, unit
# tests (then those that need root, as CI runs as root), then the end-to-end suites
# inside tests/kvmbox (one box boot for all of them and the tests that need KVM, and a
# second one for the OCI conformance suite and Docker).
#
# Rust tests that need more than a plain `cargo test` has are named and ignored so:
#   root_...  #[ignore = "needs root: <why>"]  run here by `cargo test -- --ignored root_`
#   kvm_...   #[ignore = "needs KVM: <why>"]   run in the box by tests/e2e/kvm-tests.sh
#             (and the agent's cgroup cases by tests/e2e/agent.sh, against a guest agent)
# Prints the time of each phase; the last line is the end-to-end "N passed, N failed".
set -uo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT" || exit 1

failed=()
counted_pass=0 counted_fail=0
phase_log=$(mktemp)
trap 'rm -f "$phase_log"' EXIT
phase() {
  local name=$1 t0=$SECONDS rc last
  shift
  echo "=== $name"
  "$@" 2>&1 | tee "$phase_log"
  rc=${PIPESTATUS[0]}
  # Suites end with "N passed, N failed"; add them up for the closing line.
  last=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$phase_log" | tail -n 1)
  if [[ $last =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    counted_pass=$((counted_pass + BASH_REMATCH[1])) counted_fail=$((counted_fail + BASH_REMATCH[2]))
  fi
  echo "=== $name: $((SECONDS - t0)) s$([[ $rc == 0 ]] || echo ", FAILED (exit $rc)")"
  [[ $rc == 0 ]] || failed+=("$name")
  return $rc
}

phase "packages" ensure_packages busybox-static libseccomp-dev cpio qemu-system-x86 linux-source-6.1 \
  bc bison flex libelf-dev libssl-dev xz-utils kmod python3 gcc libc6-dev jq file runc containerd \
  docker-registry skopeo docker.io golang-go iproute2 containernetworking-plugins shellcheck || exit 1
# Old target dirs (other Cargo.lock versions) only pile up in CI's long-lived cache.
[[ ${CI:-} == true ]] && prune_targets
phase "cargo fmt" cargo fmt --all -- --check
# shell_scripts: every shell script of the repository, one a line: the files whose first
# line is a sh/bash/dash/ksh shebang, and the sourced *.sh libraries (no shebang).
shell_scripts() {
  local f first
  while IFS= read -r -d '' f; do
    first=
    IFS= read -r -n 128 first <"$f" 2>/dev/null
    if [[ $first =~ ^\#!.*[/[:space:]](ba|da|k)?sh([[:space:]]|$) || $f == *.sh ]]; then
      echo "$f"
    fi
  done < <(find . \( -path ./.git -o -path ./target \) -prune -o -type f -print0 | sort -z)
}
shellcheck_all() {
  local scripts
  mapfile -t scripts < <(shell_scripts)
  echo "shellcheck -S warning: ${#scripts[@]} scripts"
  shellcheck -S warning "${scripts[@]}"
}
phase "shellcheck" shellcheck_all
phase "cargo clippy" cargo clippy --release --workspace --all-targets -q -- -D warnings
phase "unit tests" cargo test --release --workspace -q
phase "root tests" cargo test --release --workspace -q -- --ignored root_
phase "release build" cargo build --release --workspace -q || exit 1
# A runv-vmm with the test-only seccomp-selftest feature, for the seccomp trap cases of
# tests/e2e/boot.sh; a debug build, so the release runv-vmm never has the hook.
phase "seccomp selftest build" cargo build -q -p runv-vmm --features seccomp-selftest || exit 1
export RUNV_VMM_SELFTEST=$CARGO_TARGET_DIR/debug/runv-vmm
kernel_out=$(mktemp)
phase "guest kernel" bash -c 'guest-kernel/build.sh > "$1"' _ "$kernel_out" || exit 1
RUNV_GUEST_KERNEL=$(tail -n 1 "$kernel_out")
rm -f "$kernel_out"
export RUNV_GUEST_KERNEL
RUNV_MARKER_INITRD=$(build_initramfs tests/initramfs/marker-init.sh marker)
export RUNV_MARKER_INITRD
RUNV_BLK_INITRD=$(build_initramfs tests/initramfs/blk-init.sh blk)
export RUNV_BLK_INITRD
fstest=$(build_helper tests/initramfs/fstest.c) || exit 1
RUNV_VIRTIOFS_INITRD=$(build_initramfs tests/initramfs/virtiofs-init.sh virtiofs "$fstest:/bin/fstest")
export RUNV_VIRTIOFS_INITRD
vsocktest=$(build_helper tests/initramfs/vsocktest.c) || exit 1
RUNV_VSOCK_INITRD=$(build_initramfs tests/initramfs/vsock-init.sh vsock "$vsocktest:/bin/vsocktest")
# The same helper is the attacker in a container of tests/e2e/security.sh.
RUNV_VSOCKTEST=$vsocktest
export RUNV_VSOCK_INITRD RUNV_VSOCKTEST
# The agent suite over vsock: the static agent as the guest's /init, and the same Rust
# test binaries that the root tests phase ran against a host-mode agent.
agent_bin=$(agent/build.sh) || exit 1
RUNV_AGENT_INITRD=$(build_initramfs --no-busybox "$agent_bin" agent)
export RUNV_AGENT_INITRD
# The workspace's test executables, as the unit tests phase built them: the agent's
# integration suites (RUNV_AGENT_SUITES, tests/e2e/agent.sh) and every other one, whose
# kvm_ tests tests/e2e/kvm-tests.sh runs (RUNV_KVM_TESTS).
test_exes=$(cargo test --release -q --workspace --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json, sys
agent = sys.argv[1]
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        suite = m["manifest_path"] == agent and m["target"]["kind"] == ["test"]
        print("agent" if suite else "kvm", m["executable"])' "$ROOT/agent/Cargo.toml")
RUNV_AGENT_SUITES=$(awk '$1 == "agent" { print $2 }' <<<"$test_exes" | tr '\n' ' ')
RUNV_KVM_TESTS=$(awk '$1 == "kvm" { print $2 }' <<<"$test_exes" | tr '\n' ' ')
export RUNV_AGENT_SUITES RUNV_KVM_TESTS
# runv, its shim and hyperctl, as a user gets them: runv-vmm beside runv, the guest kernel
# and the agent initramfs named by the environment (docs/runtime.md).
export RUNV_KERNEL=$RUNV_GUEST_KERNEL RUNV_INITRD=$RUNV_AGENT_INITRD
export RUNTIME=$CARGO_TARGET_DIR/release/runv HYPERCTL=$CARGO_TARGET_DIR/release/hyperctl
phase "kvmbox self-test" tests/kvmbox/selftest.sh
tools_out=$(mktemp)
phase "runtime-tools build" bash -c 'tests/conformance/build.sh > "$1"' _ "$tools_out"
RUNV_RUNTIME_TOOLS_DIR=$(tail -n 1 "$tools_out")
rm -f "$tools_out"
export RUNV_RUNTIME_TOOLS_DIR

phase "end-to-end (kvmbox)" tests/kvmbox/kvmbox --timeout 2700 --env RUNV_MARKER_INITRD \
  --env RUNV_BLK_INITRD --env RUNV_VIRTIOFS_INITRD --env RUNV_VSOCK_INITRD \
  --env RUNV_AGENT_INITRD --env RUNV_AGENT_SUITES --env RUNV_KVM_TESTS --env RUNV_VSOCKTEST \
  --env RUNV_KERNEL --env RUNV_VMM_SELFTEST \
  --env RUNV_INITRD --env RUNTIME --env HYPERCTL -- tests/e2e/run-all.sh
# A box of its own, after the first: two boxes side by side on a 2-core host would make
# both slower and their timing-sensitive cases (agent call limits) less predictable.
# The two box limits plus the build phases stay inside CI's 90 minutes.
phase "conformance (kvmbox)" tests/kvmbox/kvmbox --timeout 1800 --env RUNV_RUNTIME_TOOLS_DIR \
  --env RUNV_KERNEL --env RUNV_INITRD --env RUNTIME -- tests/conformance/gate.sh

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "FAILED phases: ${failed[*]}"
  echo "$counted_pass passed, $((counted_fail + ${#failed[@]})) failed"
  exit 1
fi
echo "all phases passed; end-to-end and box checks:"
echo "$counted_pass passed, $counted_fail failed"
