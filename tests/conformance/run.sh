#!/usr/bin/env bash
# Runs the OCI runtime-tools validation suite (every validation/*.t) against one or more
# runtimes and compares them with the first one, the reference (runc).
#
# Usage: tests/conformance/run.sh [--gate] [--gated-only] [--write-doc FILE] [--timeout SECS]
#                                 [--only NAME[,NAME...]] [--keep-logs DIR] RUNTIME...
#   RUNTIME        a runc-compatible binary, or LABEL=BINARY to name its column
#                  (default label: the binary's basename)
#   --gate         one "ok"/"not ok" line per test file and a closing "N passed, N failed";
#                  exits 1 when a file passes for the reference but fails for another
#                  runtime and is not listed in tests/conformance/exceptions.txt, or when a
#                  runtime leaks containers, mounts or processes. Such a mismatch is
#                  tried again for that runtime, then up to 3 times for the reference: a
#                  file the reference fails on a re-check is flaky there and does not gate
#   --gated-only   runs a file for the other runtimes only when the reference passes it
#                  (the others are "skip" in the table): the gate's verdict in less time
#   --write-doc F  writes the comparison table (docs/compatibility.md) to F
#   --timeout S    per-file time limit (default $RUNV_CONFORMANCE_TIMEOUT, else 300 s);
#                  a file that hits it fails ("hung") and its process group is killed
#   --only LIST    only these test files (names with or without .t), for quick checks
#   --keep-logs D  keeps every file's raw stdout/stderr under D/<label>/
#
# Each runtime is called through a one-line wrapper that adds `--root <fresh dir>`, so the
# run never touches the runtime's default state and leftovers can be found and removed.
# Each .t runs from the suite's source root (it reads rootfs-amd64.tar.gz and runtimetest
# from there) with TMPDIR in the run's scratch dir (its bundles go there). Its TAP output
# is filtered to the "ok"/"not ok"/plan lines (the suite prints YAML diagnostics and raw
# text in between); a file passes when it exits 0, its plan is complete and nothing is
# "not ok", nor (for the files that report only through diagnostics) an "error" under a
# "1..0" plan. The suite itself comes from tests/conformance/build.sh (cached).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)

gate=0 gated_only=0 doc="" limit=${RUNV_CONFORMANCE_TIMEOUT:-300} only="" keep=""
runtimes=()
while [[ $# -gt 0 ]]; do
  case $1 in
  --gate) gate=1 ;;
  --gated-only) gated_only=1 ;;
  --write-doc) doc=${2:?--write-doc needs a file}; shift ;;
  --timeout) limit=${2:?--timeout needs seconds}; shift ;;
  --only) only=${2:?--only needs names}; shift ;;
  --keep-logs) keep=${2:?--keep-logs needs a directory}; shift ;;
  -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  -*) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  *) runtimes+=("$1") ;;
  esac
  shift
done
[[ ${#runtimes[@]} -gt 0 ]] || { echo "run.sh: name at least one runtime binary (see --help)" >&2; exit 2; }
[[ $limit =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --timeout must be a positive number of seconds, got '$limit'" >&2; exit 2; }

labels=() bins=()
for rt in "${runtimes[@]}"; do
  label=${rt%%=*} bin=${rt#*=}
  [[ $rt == *=* ]] || label=$(basename "$rt")
  resolved=$(command -v "$bin" 2>/dev/null) || { echo "run.sh: runtime '$bin' not found or not executable" >&2; exit 2; }
  [[ -x $resolved && $label =~ ^[A-Za-z0-9._-]+$ ]] || { echo "run.sh: bad runtime '$rt' (label must be [A-Za-z0-9._-]+, binary executable)" >&2; exit 2; }
  for l in "${labels[@]}"; do [[ $l != "$label" ]] || { echo "run.sh: runtime label '$label' given twice; use LABEL=BINARY" >&2; exit 2; }; done
  labels+=("$label") bins+=("$resolved")
done

suite=${RUNV_RUNTIME_TOOLS_DIR:-}
if [[ -z $suite ]]; then
  suite=$("$here/build.sh" | tail -n 1) || { echo "run.sh: building runtime-tools failed" >&2; exit 2; }
fi
mapfile -t files < <(cd "$suite" && find validation -mindepth 2 -maxdepth 2 -name '*.t' | sort)
if [[ -n $only ]]; then
  wanted=()
  IFS=, read -ra names <<<"$only"
  for n in "${names[@]}"; do
    n=${n%.t}
    [[ -x $suite/validation/$n/$n.t ]] || { echo "run.sh: no test file $n.t in $suite/validation" >&2; exit 2; }
    wanted+=("validation/$n/$n.t")
  done
  files=("${wanted[@]}")
fi
[[ ${#files[@]} -gt 0 ]] || { echo "run.sh: no validation/*.t in $suite" >&2; exit 2; }

# exceptions.txt: "name.t  reason" per line; '#' starts a comment.
declare -A exception=()
while read -r name reason; do
  [[ -z $name || $name == \#* ]] && continue
  exception[$name]=$reason
done <"$here/exceptions.txt"

work=$(mktemp -d "${TMPDIR:-/tmp}/runv-conformance.XXXXXX")
leak_procs=${RUNV_CONFORMANCE_LEAK_PROCS:-runv-vmm runv-shim}
cleanup() {
  local m
  # Unmount anything a runtime left under the scratch dir before removing it.
  for m in $(mounts_under "$work"); do
    umount -l "$m" 2>/dev/null
  done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# proc_pids: PIDs of processes named like the runtime's helpers (for the leak check).
proc_pids() {
  local n
  for n in $leak_procs; do pgrep -x "$n"; done | sort -n
}

# mounts_under DIR: mount points at or below DIR, deepest first.
mounts_under() {
  awk -v w="$1" 'index($5, w) == 1 {print $5}' /proc/self/mountinfo | sort -r
}

# run_file validation/X/X.t: runs one file for $label through $wrapper; sets v (pass or
# fail), r (why), dt (seconds). Afterwards removes what the file left behind: containers
# in the runtime's state (force-deleted), mounts under its TMPDIR, its bundles.
run_file() {
  local f=$1 out err t0 rc tap plan planned ran failed left id m mounts
  out=$logs/$name.out err=$logs/$name.err
  t0=$(date +%s.%N)
  # timeout runs the test in its own process group and kills the whole group.
  (cd "$suite" && RUNTIME=$wrapper TMPDIR=$tmp timeout -k 10 "$limit" "./$f") >"$out" 2>"$err" </dev/null
  rc=$?
  dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  tap=$(grep -E '^(not )?ok\b|^1\.\.[0-9]+|^Bail out!' "$out")
  plan=$(grep -cE '^1\.\.[0-9]+' <<<"$tap")
  planned=$(grep -oE '^1\.\.[0-9]+' <<<"$tap" | tail -n 1 | cut -d. -f3)
  ran=$(grep -cE '^(not )?ok\b' <<<"$tap")
  failed=$(grep -cE '^not ok\b' <<<"$tap")
  if [[ $rc -eq 124 || $rc -eq 137 ]]; then
    v=fail r="hung: killed after $limit s ($ran tests reported)"
  elif grep -q '^Bail out!' <<<"$tap"; then
    v=fail r="bailed out: $(grep -m1 '^Bail out!' <<<"$tap")"
  elif [[ $plan -ne 1 ]]; then
    v=fail r="$([[ $plan -eq 0 ]] && echo "no plan" || echo "$plan plans"), exit $rc, $ran tests reported"
  elif [[ $failed -gt 0 ]]; then
    v=fail r="$failed of $planned not ok: $(grep -m1 '^not ok' <<<"$tap" | cut -c1-100)"
  elif [[ $ran -ne $planned ]]; then
    v=fail r="ran $ran of $planned planned"
  elif [[ $rc -ne 0 ]]; then
    v=fail r="all $planned ok but exit $rc"
  elif [[ $planned -eq 0 ]] && grep -qE '^ +"error": ' "$out"; then
    # The lifecycle files (hooks, prestart, poststart...) report a failure only as an
    # "error" diagnostic under a "1..0" plan, which prove would count as skipped.
    v=fail r="no tests, error: $(grep -m1 -E '^ +"error": ' "$out" | sed -E 's/^ +"error": "//; s/\\n.*//; s/"$//' | cut -c1-100)"
  else
    v=pass r="$planned ok"
    [[ $planned -gt 0 ]] || r="no tests, no error reported"
  fi
  left=$("$wrapper" list -q 2>/dev/null)
  if [[ -n $left ]]; then
    for id in $left; do timeout 60 "$wrapper" delete --force "$id" >/dev/null 2>&1; done
    r="$r; left $(wc -w <<<"$left") container(s), force-deleted"
  fi
  # Mounts in the host's namespace under the bundles (a config without a mount
  # namespace makes runc mount /proc, /dev... there): unmount before removing anything.
  mounts=$(mounts_under "$tmp")
  if [[ -n $mounts ]]; then
    for m in $mounts; do umount -l "$m" 2>/dev/null; done
    r="$r; left $(wc -l <<<"$mounts") mount(s) on the host, unmounted"
    leaked[$label/$name]=$(wc -l <<<"$mounts")
  fi
  rm -rf --one-file-system "${tmp:?}"/* 2>/dev/null
}

# recheck_reference FILE: a file the reference passed and another runtime failed twice is
# run up to 3 more times for the reference; if it fails once, the reference does not pass
# it reliably (pidfile.t races the container's exit against `kill`), so it does not gate.
recheck_reference() {
  local f=$1 keep_v=$v keep_r=$r keep_dt=$dt keep_label=$label keep_wrapper=$wrapper
  local keep_tmp=$tmp keep_logs=$logs n
  label=$ref wrapper=$work/$ref tmp=$work/tmp-$ref logs=$work/recheck-$ref
  mkdir -p "$logs"
  for n in 1 2 3; do
    run_file "$f"
    if [[ $v == fail ]]; then
      flaky[$name]="$ref passed it, then failed re-check $n: $r"
      break
    fi
  done
  v=$keep_v r=$keep_r dt=$keep_dt label=$keep_label wrapper=$keep_wrapper tmp=$keep_tmp logs=$keep_logs
}

declare -A verdict=() why=() secs=() leaked=() logdir=() flaky=()
ref=${labels[0]}
leaks=()
started=$(date -u '+%Y-%m-%d %H:%M UTC')
for i in "${!labels[@]}"; do
  label=${labels[$i]} bin=${bins[$i]}
  root=$work/root-$label tmp=$work/tmp-$label logs=${keep:+$keep/$label}
  logs=${logs:-$work/logs-$label}
  mkdir -p "$root" "$tmp" "$logs"
  logdir[$label]=$logs
  wrapper=$work/$label
  printf '#!/bin/sh\nexec %q --root %q "$@"\n' "$bin" "$root" >"$wrapper"
  chmod +x "$wrapper"
  procs_before=$(proc_pids)
  echo "# $label: $bin ($("$bin" --version 2>/dev/null | head -n 1)), ${#files[@]} files, ${limit} s limit each"
  t_rt=$SECONDS npass=0 nskip=0
  for f in "${files[@]}"; do
    name=$(basename "$f")
    if [[ $gated_only -eq 1 && $i -gt 0 && ${verdict[$ref/$name]} != pass ]]; then
      verdict[$label/$name]=skip why[$label/$name]="not run: $ref fails it (--gated-only)" secs[$label/$name]=0
      nskip=$((nskip + 1))
      continue
    fi
    run_file "$f"
    # The suite has timing races (pidfile.t kills a container that may have exited):
    # a file the reference passed gets one more try before it counts as a failure.
    if [[ $v == fail && $i -gt 0 && ${verdict[$ref/$name]} == pass ]]; then
      first=$r
      run_file "$f"
      if [[ $r == "$first" ]]; then r="$r (twice)"; else r="$r (2nd try; 1st: $first)"; fi
      [[ $v == fail ]] && recheck_reference "$f"
    fi
    [[ $v == pass ]] && npass=$((npass + 1))
    verdict[$label/$name]=$v why[$label/$name]=$r secs[$label/$name]=$dt
    printf '# %-8s %-4s %-40s %6s s  %s\n' "$label" "$v" "$name" "$dt" "$r"
  done
  total=$((SECONDS - t_rt))
  secs[$label]=$total
  verdict[$label]="$npass of ${#files[@]} files pass$([[ $nskip -eq 0 ]] || echo " ($nskip not run)"), $total s"
  echo "# $label: ${verdict[$label]}"
  # Leak check for this runtime: containers, mounts, helper processes, state.
  left=$("$wrapper" list -q 2>/dev/null)
  [[ -z $left ]] || leaks+=("$label: containers still listed after force-delete: $(tr '\n' ' ' <<<"$left")")
  mounts=$(mounts_under "$work")
  [[ -z $mounts ]] || leaks+=("$label: mounts left under $work: $(tr '\n' ' ' <<<"$mounts")")
  # Host mounts left by a file count as a leak unless the reference left them too.
  for f in "${files[@]}"; do
    name=$(basename "$f")
    if [[ -n ${leaked[$label/$name]:-} && $label != "$ref" && -z ${leaked[$ref/$name]:-} ]]; then
      leaks+=("$label: $name left ${leaked[$label/$name]} mount(s) in the host's mount namespace")
    fi
  done
  sleep 1
  new=$(comm -13 <(echo "$procs_before") <(proc_pids) | tr '\n' ' ')
  [[ -z ${new// /} ]] || leaks+=("$label: helper processes left ($leak_procs): $new")
  state=$(find "$root" -mindepth 1 -maxdepth 1 2>/dev/null | head -n 5 | tr '\n' ' ')
  [[ -z $state ]] || leaks+=("$label: state left in its --root: $state")
done

gate_pass=0 gate_fail=0
if [[ $gate -eq 1 || ${#labels[@]} -gt 1 ]]; then
  for f in "${files[@]}"; do
    name=$(basename "$f")
    for label in "${labels[@]:1}"; do
      rv=${verdict[$ref/$name]} v=${verdict[$label/$name]}
      if [[ $rv == fail || $v == pass ]]; then
        line="ok - $name: $ref $rv, $label $v"
        [[ $rv == fail && $v == pass ]] && line+=" (better than $ref)"
        [[ -n ${exception[$name]:-} && $v == pass ]] && line+=" # listed in exceptions.txt but passes: remove it"
      elif [[ -n ${flaky[$name]:-} ]]; then
        line="ok - $name: $ref pass, $label fail # $ref is flaky on it: ${flaky[$name]}"
      elif [[ -n ${exception[$name]:-} ]]; then
        line="ok - $name: $ref pass, $label fail # exception: ${exception[$name]}"
      else
        line="not ok - $name: $ref pass, $label fail: ${why[$label/$name]}"
      fi
      [[ $gate -eq 1 ]] || { echo "# ${line}"; continue; }
      echo "$line"
      if [[ $line == ok* ]]; then gate_pass=$((gate_pass + 1)); else
        gate_fail=$((gate_fail + 1))
        sed 's/^/#   /' "${logdir[$label]}/$name.err" 2>/dev/null | tail -n 15
      fi
    done
  done
fi
for l in "${leaks[@]}"; do
  if [[ $gate -eq 1 ]]; then echo "not ok - leak check: $l"; gate_fail=$((gate_fail + 1)); else echo "# leak: $l"; fi
done
if [[ $gate -eq 1 && ${#leaks[@]} -eq 0 ]]; then
  echo "ok - leak check: no containers, mounts, state or $leak_procs processes left"
  gate_pass=$((gate_pass + 1))
fi

if [[ -n $doc ]]; then
  {
    echo "# OCI runtime-tools conformance: runv beside runc"
    echo
    echo "Written by \`tests/conformance/run.sh --write-doc\` on $started"
    echo "($(if [[ ${KVMBOX:-} == 1 ]]; then echo "inside tests/kvmbox, "; fi)kernel $(uname -r), cgroup $(if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then echo v2; else echo v1; fi))."
    echo "Suite: opencontainers/runtime-tools 260e151 (\`validation/*.t\`, built by tests/conformance/build.sh);"
    echo "a file passes when it exits 0, its TAP plan is complete and no test is \`not ok\`; the lifecycle"
    echo "files (hooks, prestart, poststart, ...) report failures only as an \`error\` diagnostic under"
    echo "a \`1..0\` plan, which \`prove\` counts as skipped: here such a file fails;"
    echo "each file has a ${limit} s limit. All runtimes ran in the same run, one after the other."
    echo
    for i in "${!labels[@]}"; do
      echo "- **${labels[$i]}**: \`${bins[$i]}\` ($("${bins[$i]}" --version 2>/dev/null | head -n 1)): ${verdict[${labels[$i]}]}"
    done
    if [[ ${#labels[@]} -eq 1 ]]; then
      echo
      echo "Only ${labels[0]} ran here: the runv column appears when run.sh is given the runv binary too"
      echo '(`run.sh --gate --write-doc docs/compatibility.md runc $(command -v runv)` inside tests/kvmbox).'
    fi
    echo
    printf '| test file |'; printf ' %s |' "${labels[@]}"; echo " note |"
    printf '|---|'; printf -- '---|%.0s' "${labels[@]}"; echo "---|"
    for f in "${files[@]}"; do
      name=$(basename "$f")
      printf '| %s |' "$name"
      note=""
      for label in "${labels[@]}"; do
        printf ' %s (%s s) |' "${verdict[$label/$name]}" "${secs[$label/$name]}"
        [[ ${verdict[$label/$name]} == pass ]] || note+="$label: ${why[$label/$name]}; "
      done
      [[ -n ${exception[$name]:-} ]] && note="exception: ${exception[$name]}; $note"
      [[ -n ${flaky[$name]:-} ]] && note="not gated, $ref is flaky on it: ${flaky[$name]}; $note"
      note=${note%; }
      echo " ${note//|/\\|} |"
    done
    echo
    echo "## Exceptions"
    echo
    echo "Files that may fail for runv although runc passes them, because they inspect host"
    echo "namespaces or host cgroups from outside the VM (read from tests/conformance/exceptions.txt;"
    echo "the gate, \`run.sh --gate\`, fails on any other file that passes for runc and fails for runv):"
    echo
    if [[ ${#exception[@]} -eq 0 ]]; then echo "None so far."; fi
    for name in $(printf '%s\n' "${!exception[@]}" | sort); do echo "- \`$name\`: ${exception[$name]}"; done
    if [[ ${#leaks[@]} -gt 0 ]]; then
      echo
      echo "## Leaks found in this run"
      echo
      for l in "${leaks[@]}"; do echo "- $l"; done
    fi
  } >"$doc.tmp.$$" && mv -f "$doc.tmp.$$" "$doc"
  echo "# wrote $doc"
fi

if [[ $gate -eq 1 ]]; then
  echo "$gate_pass passed, $gate_fail failed"
  [[ $gate_fail -eq 0 ]]
fi
