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
