#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 20), one after the other, in
# one process each. Prints a line per target with libFuzzer's execution count, then
# "fuzz: N passed, M failed"; exits non-zero on any crash, leak or timeout, naming the
# reproducer (replay it: cargo fuzz run TARGET PATH).
#
#   fuzz/run.sh [SECONDS]
#
# Toolchain: nightly with AddressSanitizer when rustup lists a nightly; otherwise the default
# toolchain with RUSTC_BOOTSTRAP=1 and no sanitizer (cargo-fuzz wants nightly flags).
# Environment:
#   FUZZ_TOOLCHAIN  force a toolchain (e.g. stable: the no-sanitizer fallback)
#   FUZZ_SANITIZER  address (nightly default), none, ...
#   FUZZ_TARGETS    space-separated subset of the targets
#   FUZZ_TARGET_DIR build cache (default ~/.cache/wschannel/fuzz-target, one folder per mode)
#   FUZZ_ARGS       extra libFuzzer flags, e.g. "-max_len=8192"
set -euo pipefail

seconds=${1:-20}
if ! [[ $seconds =~ ^[0-9]+$ ]]; then
    echo "usage: $0 [SECONDS]" >&2
    exit 2
fi
cd "$(dirname "$0")"
fuzz_dir=$(pwd)
targets=(${FUZZ_TARGETS:-frame_header engine pieces handshake_request handshake_response inflate})
started=$(date +%s)

say() {
    printf 'fuzz [%4ss]: %s\n' "$(($(date +%s) - started))" "$*"
}

if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz from crates.io (cargo install cargo-fuzz --locked; a few minutes)"
    cargo install cargo-fuzz --locked
fi

# Which toolchain, and with it which sanitizer.
cargo_cmd=(cargo)
toolchain=${FUZZ_TOOLCHAIN:-}
if [[ -z $toolchain ]] && command -v rustup >/dev/null 2>&1 &&
    rustup toolchain list 2>/dev/null | grep '^nightly' >/dev/null; then
    toolchain=nightly
fi
if [[ -n $toolchain ]]; then
    cargo_cmd=(cargo "+$toolchain")
fi
if [[ $toolchain == nightly* ]]; then
    sanitizer=${FUZZ_SANITIZER:-address}
else
    # Stable: cargo-fuzz passes nightly-only flags, which RUSTC_BOOTSTRAP allows; the
    # sanitizers need a nightly, so none.
    export RUSTC_BOOTSTRAP=1
    sanitizer=${FUZZ_SANITIZER:-none}
fi
mode="${toolchain:-default}-$sanitizer"
target_dir="${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wschannel/fuzz-target}/$mode"
flags=(--sanitizer "$sanitizer" --target-dir "$target_dir")
say "toolchain ${toolchain:-default} ($("${cargo_cmd[@]}" --version 2>/dev/null | cut -d' ' -f2)), sanitizer $sanitizer, build cache $target_dir"

say "building ${#targets[@]} targets (a first build takes a few minutes)"
for target in "${targets[@]}"; do
    "${cargo_cmd[@]}" fuzz build "${flags[@]}" "$target"
done
say "built"

mkdir -p artifacts/logs
passed=0
failed=0
total_execs=0
for target in "${targets[@]}"; do
    corpora=("corpus-growth/$target" "corpus/$target")
    [[ -d regressions/$target ]] && corpora+=("regressions/$target")
    mkdir -p "corpus-growth/$target" "artifacts/$target"
    case $target in
        engine | frame_header | pieces) dict=(-dict="$fuzz_dir/dict/engine.dict") ;;
        handshake_*) dict=(-dict="$fuzz_dir/dict/handshake.dict") ;;
        *) dict=() ;;
    esac
    log="artifacts/logs/$target.log"
    say "running $target for ${seconds}s (log: fuzz/$log)"
    # New inputs go to corpus-growth/ (ignored by git); the seeds and regressions are read.
    # The dictionaries hold the tokens worth splicing in: length encodings near 2^16, 2^63
    # and 2^64, opcodes, close codes, handshake header lines.
    # shellcheck disable=SC2086  # FUZZ_ARGS is a list of flags
    if "${cargo_cmd[@]}" fuzz run "${flags[@]}" "$target" "${corpora[@]}" -- \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -max_len=4096 -artifact_prefix="$fuzz_dir/artifacts/$target/" "${dict[@]}" ${FUZZ_ARGS:-} \
        >"$log" 2>&1; then
        status=ok
    else
        status=FAILED
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    execs=${execs:-0}
    total_execs=$((total_execs + execs))
    if [[ $status == ok ]]; then
        passed=$((passed + 1))
        say "$target: $execs executions, ok"
    else
        failed=$((failed + 1))
        say "$target: $execs executions, FAILED"
        grep -E "panicked at|^ERROR: |SUMMARY: |==[0-9]+==ERROR" "$log" | head -n 8 | sed 's/^/    /' || true
        reproducer=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        if [[ -n $reproducer ]]; then
            say "$target: reproducer $reproducer (replay: cargo fuzz run $target $reproducer)"
        else
            tail -n 30 "$log" | sed 's/^/    /'
        fi
    fi
done
say "$total_execs executions in total"
echo "fuzz: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
