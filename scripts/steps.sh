#!/usr/bin/env bash
# Runs `make STEP` for each STEP in turn, each announced and timed:
#
#   == lint
#   ... its output ...
#   == lint: ok (12 s; 95 s in all)
#
# then one line per step and the total. A failing step does not stop the others (each one's
# result is worth having from one run), except the first: when the system packages cannot be
# installed, nothing after it can run as it should. The exit status is 1 if any step failed.
#
# A step written A+B runs make A and make B at once (each line of theirs prefixed with its
# name), for steps that mostly wait: Autobahn beside the wheel job.
#
#   scripts/steps.sh STEP...      (make test runs it with its steps)
set -uo pipefail

[[ $# -ge 1 ]] || { echo "usage: $0 STEP..." >&2; exit 2; }
make=${MAKE:-make}

# Runs one step; A+B: its parts at once, failing if any part fails.
run_step() {
    if [[ $1 != *+* ]]; then
        "$make" --no-print-directory "$1"
        return
    fi
    local parts part pids=() status=0
    IFS=+ read -ra parts <<<"$1"
    for part in "${parts[@]}"; do
        (set -o pipefail; "$make" --no-print-directory "$part" 2>&1 | sed -u "s/^/[$part] /") &
        pids+=("$!")
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || status=1
    done
    return "$status"
}
started=$(date +%s)
results=()
failed=()
for step in "$@"; do
    echo "== $step"
    step_started=$(date +%s)
    run_step "$step"
    status=$?
    now=$(date +%s)
    took=$((now - step_started))
    if [[ $status -eq 0 ]]; then
        verdict=ok
    else
        verdict=FAILED
        failed+=("$step")
    fi
    echo "== $step: $verdict ($took s; $((now - started)) s in all)"
    results+=("$(printf '%-16s %-7s %5d s' "$step" "$verdict" "$took")")
    if [[ $status -ne 0 && $step == "$1" ]]; then
        echo "== stopping: the first step failed, and the others need it"
        break
    fi
done
echo "== summary"
printf '   %s\n' "${results[@]}"
total=$(($(date +%s) - started))
if [[ ${#failed[@]} -eq 0 ]]; then
    echo "== all ${#results[@]} steps passed in $total s"
    exit 0
fi
echo "== FAILED: ${failed[*]} (${#failed[@]} of ${#results[@]} steps; $total s)"
exit 1
