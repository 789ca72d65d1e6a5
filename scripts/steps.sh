#!/usr/bin/env bash
# Runs `make STEP` for each STEP in turn, each announced and timed (wall and CPU):
#
#   == lint
#   ... its output ...
#   == lint: ok (12 s, CPU 20 s; 95 s in all; load 1.52 1.49 1.06)
#
# then a summary table (a row per make target: verdict, wall time, CPU time, when it started)
# and the total. A failing step does not stop the others (each one's result is worth having
# from one run), except the first: when the system packages cannot be installed, nothing
# after it can run as it should. The exit status is 1 if any step failed.
#
# A step written A+B+C runs its parts at once (each line of theirs prefixed with its name):
# the steps that mostly wait beside the ones that compute. A part written X,Y runs make X,
# then make Y (a lane: one after the other, however the first went), e.g.
#   conformance+test-wheels+lint,fuzz,test-rust
#
# CPU is user + system time of the step's processes (bash's `times`: make and all it waited
# for). A make target named in $NICE_STEPS runs under `nice -n 10`: the CPU-bound builds and
# checks that no clock is waiting on take what the waiting steps leave.
#
# Progress: a step that prints nothing for $QUIET_SECONDS (30) gets a line saying it is still
# running.
#
# When a step fails, the lines of its output that say what failed (pytest's FAILED and ERROR
# lines, a failing suite's counts, compiler errors, panics, timeouts) come again at the very
# end, after the summary: a CI report that keeps only the last lines of a run still names the
# failing test.
#
#   scripts/steps.sh STEP...      (make test runs it with its steps)
set -uo pipefail

[[ $# -ge 1 ]] || { echo "usage: $0 STEP..." >&2; exit 2; }
make=${MAKE:-make}
nice_steps=" ${NICE_STEPS:-} "
quiet=${QUIET_SECONDS:-30}
work=$(mktemp -d "${TMPDIR:-/tmp}/steps.XXXXXX")
trap 'rm -rf "$work"' EXIT
started=$(date +%s)

load() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?"; }

# Copies stdin to stdout, each line prefixed with $1 (may be empty); after $quiet seconds
# without a line, says that step $2 is still running.
relay() {
    local prefix=$1 name=$2 line="" part began=$SECONDS status
    while true; do
        IFS= read -r -t "$quiet" part
        status=$?
        if [[ $status -eq 0 ]]; then
            printf '%s%s\n' "$prefix" "$line$part"
            line=""
        elif [[ $status -gt 128 ]]; then  # timed out: keep what came of the line so far
            line+=$part
            printf '%s... %s still running (%d s; load %s)\n' "$prefix" "$name" \
                "$((SECONDS - began))" "$(load)"
        else  # the end
            [[ -n $line$part ]] && printf '%s%s\n' "$prefix" "$line$part"
            return 0
        fi
    done
}

# Runs make target $1 with its output relayed (prefix $2); writes "STATUS WALL CPU START"
# to $work/$1.result; returns make's status.
run_target() {
    local name=$1 prefix=$2 began now status cpu
    local -a command=("$make" --no-print-directory "$name")
    if [[ $nice_steps == *" $name "* ]]; then
        command=(nice -n 10 "${command[@]}")
    fi
    began=$(date +%s)
    # The subshell's children's CPU (bash's `times`, second line: user and system).
    (
        "${command[@]}" 2>&1
        status=$?
        # (times in a pipeline would run in a subshell of its own, with no children)
        times >"$work/$name.times"
        tail -n 1 "$work/$name.times" | awk '{
            total = 0
            for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); total += t[1] * 60 + t[2] }
            printf "%d\n", total + 0.5
        }' >"$work/$name.cpu"
        exit "$status"
    ) | tee "$work/$name.out" | relay "$prefix" "$name"
    status=${PIPESTATUS[0]}
    now=$(date +%s)
    cpu=$(cat "$work/$name.cpu" 2>/dev/null || echo 0)
    echo "$status $((now - began)) $cpu $((began - started))" >"$work/$name.result"
    return "$status"
}

verdict() { if [[ $1 -eq 0 ]]; then echo ok; else echo FAILED; fi; }

# Announces, runs and reports one make target (in a lane of a step, or a step alone).
run_announced() {
    local name=$1 prefix=$2 status wall cpu
    echo "${prefix}== $name"
    run_target "$name" "$prefix"
    read -r status wall cpu _ <"$work/$name.result"
    echo "${prefix}== $name: $(verdict "$status") ($wall s, CPU $cpu s;" \
        "$(($(date +%s) - started)) s in all; load $(load))"
    return "$status"
}

# Runs a step: one target, or parts at once (A+B), a part being targets in turn (X,Y).
run_step() {
    if [[ $1 != *+* && $1 != *,* ]]; then
        run_target "$1" ""
        return
    fi
    local parts part names name pids=() status=0
    IFS=+ read -ra parts <<<"$1"
    for part in "${parts[@]}"; do
        (
            lane_status=0
            IFS=, read -ra names <<<"$part"
            for name in "${names[@]}"; do
                run_announced "$name" "[$name] " || lane_status=1
            done
            exit "$lane_status"
        ) &
        pids+=("$!")
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || status=1
    done
    return "$status"
}

# The make targets of a step, in the order written.
targets() { tr '+,' '  ' <<<"$1"; }

rows=()
failed=()
count=0
for step in "$@"; do
    echo "== $step"
    step_started=$(date +%s)
    run_step "$step"
    status=$?
    now=$(date +%s)
    took=$((now - step_started))
    cpu_sum=0
    for name in $(targets "$step"); do
        count=$((count + 1))
        if [[ -f $work/$name.result ]]; then
            read -r t_status t_wall t_cpu t_start <"$work/$name.result"
        else
            t_status=1 t_wall=0 t_cpu=0 t_start=$((step_started - started))
        fi
        cpu_sum=$((cpu_sum + t_cpu))
        [[ $t_status -ne 0 ]] && failed+=("$name")
        indent=""
        [[ $step == *[+,]* ]] && indent="  "
        rows+=("$(printf '%-18s %-7s %6d s %6d s %7d s' "$indent$name" "$(verdict "$t_status")" \
            "$t_wall" "$t_cpu" "$t_start")")
    done
    if [[ $step == *[+,]* ]]; then
        rows+=("$(printf '%-18s %-7s %6d s %6d s %7d s' "(at once)" "$(verdict "$status")" \
            "$took" "$cpu_sum" "$((step_started - started))")")
    fi
    echo "== $step: $(verdict "$status") ($took s, CPU $cpu_sum s; $((now - started)) s in all;" \
        "load $(load))"
    if [[ $status -ne 0 && $step == "$1" ]]; then
        echo "== stopping: the first step failed, and the others need it"
        break
    fi
done
total=$(($(date +%s) - started))
echo "== summary (wall; CPU: user + system; when it started)"
printf '   %-18s %-7s %8s %8s %9s\n' step result wall CPU start
printf '   %s\n' "${rows[@]}"
if [[ ${#failed[@]} -eq 0 ]]; then
    echo "== all $count steps passed in $total s (load $(load))"
    exit 0
fi
echo "== FAILED: ${failed[*]} (${#failed[@]} of $count steps; $total s)"
# What failed, from each failed step's output (its last such lines, each once, shortened).
for name in "${failed[@]}"; do
    echo "== what failed in $name:"
    grep -E '(^|[^A-Za-z])(FAILED|ERROR)([^A-Za-z]|$)|[0-9]+ (failed|errors?)[ ,]|^error(\[|:)|panicked at|[Tt]imeout[A-Za-z]*Error|timed out' \
        "$work/$name.out" 2>/dev/null | grep -v -E '^== ' | awk '!seen[$0]++' | tail -n 12 | cut -c1-300 \
        | sed 's/^/   /'
done
exit 1
