#!/usr/bin/env bash
# Checks the runners themselves on the host, with runc as the known-good runtime and
# /bin/false as a runtime that fails everything: run.sh's verdicts, gate, doc and argument
# errors, and that tests/e2e/docker.sh both passes with runc and fails with /bin/false.
# Needs runc, docker.io and the runtime-tools tarball; no KVM. About a minute.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../lib.sh"
run=$here/run.sh
runc=$(command -v runc) || { echo "selftest: runc not installed" >&2; exit 2; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# Argument errors: exit 2 and a message naming the bad input.
"$run" >/dev/null 2>"$scratch/e1"
check "run.sh without a runtime exits 2" test $? -eq 2
"$run" /nonexistent/rt >/dev/null 2>"$scratch/e2"
check "run.sh names a missing runtime binary" grep -q /nonexistent/rt "$scratch/e2"
"$run" --only no_such_file "$runc" >/dev/null 2>"$scratch/e3"
check "run.sh names an unknown test file" grep -q no_such_file "$scratch/e3"
"$run" --timeout 0 "$runc" >/dev/null 2>"$scratch/e4"
check "run.sh rejects --timeout 0" grep -q -- --timeout "$scratch/e4"
"$run" "$runc" "$runc" >/dev/null 2>"$scratch/e5"
check "run.sh refuses the same label twice" grep -q 'given twice' "$scratch/e5"

files=state,hostname,prestart
# runc against itself: the gate passes; the doc has one row per file and both columns.
"$run" --gate --write-doc "$scratch/doc.md" --only "$files" runc "again=$runc" >"$scratch/same" 2>&1
rc=$?
check "gate passes for runc against runc" test $rc -eq 0
check "gate closes with 4 passed, 0 failed" grep -qx '4 passed, 0 failed' "$scratch/same"
check "state.t passes for runc" grep -qE '^# runc +pass state.t' "$scratch/same"
check "prestart.t (error under a 1..0 plan) fails for runc" grep -qE '^# runc +fail prestart.t .*no tests, error' "$scratch/same"
check "doc has a row per file with both runtimes" bash -c \
  '[[ $(grep -cE "^\| (state|hostname|prestart)\.t \|.*\|.*\|.*\|$" "$1") -eq 3 ]] && grep -q "^| test file | runc | again | note |" "$1"' _ "$scratch/doc.md"
check "doc has the Exceptions section" grep -q '^## Exceptions' "$scratch/doc.md"

# A runtime that fails everything: the gate fails on the files runc passes.
"$run" --gate --only "$files" runc broken=/bin/false >"$scratch/broken" 2>&1
rc=$?
check "gate fails for /bin/false" test $rc -eq 1
check "gate names state.t and hostname.t as mismatches" bash -c \
  'grep -q "^not ok - state.t: runc pass, broken fail" "$1" && grep -q "^not ok - hostname.t: runc pass, broken fail" "$1"' _ "$scratch/broken"
check "a file runc fails does not gate" grep -q '^ok - prestart.t: runc fail, broken fail' "$scratch/broken"

# A hung file: the time limit fails it and the container it left is removed.
"$run" --timeout 2 --only kill runc >"$scratch/hung" 2>&1
check "a file over its time limit fails as hung" grep -qE '^# runc +fail kill.t .*hung: killed after 2 s' "$scratch/hung"

# docker.sh: passes with runc, fails with a runtime that cannot create containers.
if [[ -x /usr/sbin/dockerd ]]; then
  "$here/../e2e/docker.sh" "$runc" >"$scratch/docker-runc" 2>&1
  rc=$?
  check "docker.sh passes with runc" test $rc -eq 0
  [[ $rc -eq 0 ]] || show "$scratch/docker-runc"
  "$here/../e2e/docker.sh" /bin/false >"$scratch/docker-false" 2>&1
  rc=$?
  check "docker.sh fails with /bin/false" test $rc -ne 0
  check "docker.sh with /bin/false still leaves nothing behind" bash -c \
    'grep -q "^ok - dockerd stopped; no process of this run left" "$1" && grep -q "^ok - host network config unchanged" "$1"' _ "$scratch/docker-false"
else
  not_ok "docker.io is not installed (/usr/sbin/dockerd missing)"
fi
finish
