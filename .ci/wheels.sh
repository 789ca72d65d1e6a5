#!/usr/bin/env bash
# The wheel job (make test-wheels; a step of make test): the package as a user gets it.
#
# 1. make dist: the abi3 wheel (CPython 3.11+), the free-threaded CPython 3.13 wheel and the
#    sdist, into dist/ (the free-threaded interpreter is built once: .ci/build-python-ft.sh).
# 2. The sdist, built and installed on its own in a fresh virtualenv (CPython 3.11), runs an
#    echo over loopback (.ci/smoke.py).
# 3. For each interpreter of WHEEL_PYTHONS: a fresh virtualenv gets the wheel and the test
#    suite's own dependencies (the dev extra's, less the lint tools, the benchmark plots and
#    the interoperability peers), then pytest runs the repository's tests against the
#    INSTALLED package: from a scratch directory, so that python/ is not importable, with
#    WSCHANNEL_TEST_INSTALLED=1 (tests/conftest.py refuses to run unless wschannel comes from
#    site-packages). It runs the suite's "package" part (WSCHANNEL_TEST_PART, tests/conftest.py):
#    all but tests/interop, tests/browser and the behaviour suite's browser flavour (Chromium,
#    Node, the peers) and the tests of the repository's own tools (compliance/, benchmarks/),
#    which make test runs from the source tree (make test-peers). Free-threaded 3.13 cannot install
#    trustme (cryptography's cffi) nor hypothesis (its PyO3 needs 3.14 there): the TLS tests
#    skip and the property tests are left out (tests/conftest.py, WSCHANNEL_TEST_WITHOUT);
#    the suite runs there with the GIL forced off (PYTHON_GIL=0), then the thread tests again
#    with it on (PYTHON_GIL=1).
#    Two interpreters run at a time (the suite mostly waits on sockets and timers). The
#    engine-only tests (the engine-level property tests: in memory, derandomized) run on the
#    first interpreter that loads the abi3 wheel only: on the next ones they would repeat the
#    same examples against the same build.
#
# The downloads are cached in ~/.cache/uv (uv) or ~/.cache/pip (pip). WHEELS_REUSE_DIST=1
# skips make dist when dist/ exists (to run the suites again on the same files). Each
# interpreter's log is in $LOGS; a failing one's last lines are printed. Exit status: 0 when every run passed.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
CACHE="${WSCHANNEL_CACHE:-$HOME/.cache/wschannel}"
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$HOME/.cache/pip}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# make test runs this beside Autobahn: the suite's timeouts stretched (tests/conftest.py).
export WSCHANNEL_TEST_TIMEOUT_SCALE="${WSCHANNEL_TEST_TIMEOUT_SCALE:-2}"
DIST="$REPO/${DIST:-dist}"
# The longest suite first (free-threaded 3.13, then 3.11, which alone runs the engine-only
# tests): two lanes end closest together when the long ones start first.
PYTHONS="${WHEEL_PYTHONS:-3.13t 3.11 3.12 3.13}"
# The installer of the suites' virtualenvs: .venv's uv (pyproject's dev extra), else pip
# (WHEELS_INSTALLER=pip forces pip).
UV=""
if [ "${WHEELS_INSTALLER:-uv}" = uv ] && [ -x "$REPO/.venv/bin/uv" ]; then
    UV="$REPO/.venv/bin/uv"
fi
JOBS="${WHEEL_JOBS:-2}"
# The first interpreter of PYTHONS that loads the abi3 wheel: it alone runs the engine-only
# tests (run_suite).
FIRST_ABI3=""
for version in $PYTHONS; do
    if [ "$version" != 3.13t ]; then
        FIRST_ABI3=$version
        break
    fi
done
# pytest-xdist's workers per suite (-n; 0: none): the suite mostly waits on sockets and timers.
WORKERS="${WHEEL_WORKERS:-2}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wschannel-wheels.XXXXXX")
LOGS="$WORK/logs"
mkdir -p "$LOGS"
# The sessions of the suites run in a session of their own (own_session): whatever is left
# of them is stopped at the end.
SESSIONS="$WORK/sessions"
: >"$SESSIONS"
export WHEELS_SESSIONS=$SESSIONS
stop_sessions() {
    local sid
    while read -r sid; do pkill -KILL -s "$sid" 2>/dev/null || true; done <"$SESSIONS"
}
trap 'stop_sessions; rm -rf "$WORK/venvs" "$WORK/run"' EXIT

say() { printf 'wheels: %s\n' "$*"; }

# The interpreter for a version: pyenv's, else one on PATH; 3.13t is built once.
interpreter() {
    local version=$1
    if [ "$version" = 3.13t ]; then
        bash .ci/build-python-ft.sh 2>"$LOGS/build-python-ft.log" | tail -n 1
        return
    fi
    local root found=""
    root=$(pyenv root 2>/dev/null || true)
    if [ -n "$root" ]; then
        found=$(ls -d "$root"/versions/"$version".*/bin/python"$version" 2>/dev/null | sort -V | tail -n 1)
    fi
    if [ -z "$found" ]; then
        found=$(command -v "python$version" || true)
    fi
    [ -n "$found" ] || { echo "wheels: no python$version (pyenv install $version)" >&2; return 1; }
    echo "$found"
}

# The test dependencies an interpreter cannot install (see the top).
without() {
    if [ "$1" = 3.13t ]; then echo "trustme hypothesis"; fi
}

# The suite's requirements: the dev extra's pins, less what it does not need here and what
# the interpreter cannot install (the names after the interpreter).
requirements() {
    "$1" - "$REPO/pyproject.toml" "${@:2}" <<'EOF'
import re, sys, tomllib
dev = tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]["dev"]
left_out = {
    # lint and build tools
    "maturin", "ruff", "mypy", "import-linter", "uv",
    # the benchmark plots; the interoperability peers of tests/interop
    "matplotlib", "aiohttp", "websocket-client", "picows",
    *sys.argv[2:],
}
for requirement in dev:
    if re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0] not in left_out:
        print(requirement)
EOF
}

start=$SECONDS
if [ "${WHEELS_REUSE_DIST:-0}" = 1 ] && [ -d "$DIST" ]; then
    say "reusing $DIST (WHEELS_REUSE_DIST=1)"
else
    say "make dist (abi3 wheel, free-threaded 3.13 wheel, sdist)"
    make -s --no-print-directory dist DIST="$DIST" >"$LOGS/dist.log" 2>&1 \
        || { tail -n 40 "$LOGS/dist.log"; say "make dist failed (log: $LOGS/dist.log)"; exit 1; }
fi
say "$(cd "$DIST" && ls | tr '\n' ' ')($((SECONDS - start)) s)"
ABI3=$(ls "$DIST"/wschannel-*-abi3-*.whl)
FT=$(ls "$DIST"/wschannel-*-cp313t-*.whl)
SDIST=$(ls "$DIST"/wschannel-*.tar.gz)

# Runs Python ($1) with SIGINT as it should be: a job started in the background by a shell
# without job control (as the jobs here, or this script itself) inherits SIGINT ignored, and
# so would pytest and the programs the tests stop with SIGINT (the CLI, examples/chat.py),
# which then never stop.
#
# With OWN_SESSION=1 it runs in a new session (setsid), whose id goes to $SESSIONS. The
# kernel schedules each session as a group of its own (autogroup), and free-threaded
# CPython 3.13 needs that under load: creating a class (at every import) takes a lock the
# thread already holds through a critical section, and 3.13 spins on it with 40
# sched_yield() calls before it gives the lock up and takes it again (3.14 no longer locks
# a mutex its innermost critical section holds). A yield puts the process behind every
# other runnable one of its group: beside Autobahn (load 13), importing pytest, trio,
# anyio, websockets, redis and uvicorn took 240-263 s (3.3 s of CPU); in a session of its
# own, where the process is alone in its group and a yield costs nothing, 2.8-3.2 s. Its
# group then gets a fair share of the CPU beside the rest of make test's.
python_with_sigint() {
    local python=$1 session=()
    shift
    if [ "${OWN_SESSION:-0}" = 1 ]; then session=(setsid --wait); fi
    "${session[@]}" "$python" -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
if os.getsid(0) == os.getpid():
    with open(os.environ["WHEELS_SESSIONS"], "a") as sessions:
        sessions.write(f"{os.getpid()}\n")
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])' "$@"
}

# pytest's options for $WORKERS xdist workers: "-n N --dist worksteal" (a worker that has run
# out of tests takes some from another's queue), or nothing.
workers_option() {
    if [ "$WORKERS" != 0 ]; then echo "-n $WORKERS --dist worksteal"; fi
}

# Each line of the input with the seconds since $1 in front: where a suite's time goes shows
# in its log (before pytest's session starts, at collection, between tests, at the end).
stamped() {
    local since=$1 line
    while IFS= read -r line; do printf '%4d s| %s\n' $((SECONDS - since)) "$line"; done
}

# One interpreter: a fresh virtualenv, the wheel, the suite. Writes its log; returns pytest's.
run_suite() {
    local version=$1 python venv wheel run began
    began=$SECONDS
    python=$(interpreter "$version")
    echo "interpreter in $((SECONDS - began)) s: $python"
    venv="$WORK/venvs/$version"
    run="$WORK/run/$version"
    mkdir -p "$run"
    wheel=$ABI3
    [ "$version" = 3.13t ] && wheel=$FT
    # shellcheck disable=SC2046 # the names, one argument each
    requirements "$python" $(without "$version") >"$run/requirements.txt"
    echo "requirements in $((SECONDS - began)) s"
    if [ -n "$UV" ]; then
        # uv (pyproject's dev extra, in .venv): the same packages as pip would install, in
        # a few seconds instead of a minute or two beside Autobahn; it compiles no bytecode
        # (Python compiles what the suite imports when it imports it).
        "$UV" venv -q --python "$python" "$venv"
        # From the cache alone first: uv asks the index again for every package once its
        # answer is ten minutes old (seconds each on a slow line); the index only when the
        # cache lacks something (a first run, a new pin).
        "$UV" pip install -q --offline --python "$venv/bin/python" "$wheel" \
            -r "$run/requirements.txt" 2>/dev/null \
            || "$UV" pip install -q --python "$venv/bin/python" "$wheel" -r "$run/requirements.txt"
    else
        "$python" -m venv "$venv"
        # --no-compile: Python compiles what the suite imports when it imports it; pip would
        # compile every file of every package first (measured: 243 s -> 114 s for this
        # install at load 15-20, 14 -> 7 s of CPU).
        "$venv/bin/python" -m pip install -q --no-compile --upgrade pip
        "$venv/bin/python" -m pip install -q --no-compile "$wheel" -r "$run/requirements.txt"
    fi
    echo "installed in $((SECONDS - began)) s: $(basename "$wheel")"
    # Free-threaded: the GIL kept off for the whole run (PYTHON_GIL=0), or a test dependency
    # without the declaration (hiredis) would turn it on for every test after its import;
    # test_threads.py checks in a subprocess that importing wschannel keeps it off.
    # Free-threaded 3.13 runs without the specialising interpreter (slower per bytecode), and
    # its programs started by the tests (the CLI, worker processes) start slower: its
    # timeouts are stretched half as much again (a loaded machine made the CLI and worker
    # tests miss theirs; all passed on their own).
    # The engine-only tests (pytest's engine_only marker: in memory, derandomized) would do
    # the same work again on each interpreter after the first that loads the abi3 wheel.
    local select=""
    if [ "$wheel" = "$ABI3" ] && [ "$version" != "$FIRST_ABI3" ]; then
        select="not engine_only"
    fi
    local gil="" scale=$WSCHANNEL_TEST_TIMEOUT_SCALE own_session=0
    if [ "$version" = 3.13t ]; then
        gil=0
        own_session=1  # python_with_sigint says why
        scale=$(python3 -c "print(float('$scale') * 1.5)")
    fi
    local status=0
    (
        cd "$run"
        if [ -n "$gil" ]; then export PYTHON_GIL=$gil; fi
        export WSCHANNEL_TEST_TIMEOUT_SCALE=$scale OWN_SESSION=$own_session
        # pytest-timeout's limit per test (pyproject's 120 s) stretched as the tests' own
        # timeouts are: at load 20 the property test with 600 examples passed 120 s (it
        # takes 20-90 s at load 2-9).
        local limit
        limit=$(python3 -c "print(round(120 * float('$scale')))")
        # shellcheck disable=SC2046 # the options, one argument each
        WSCHANNEL_TEST_INSTALLED=1 WSCHANNEL_TEST_WITHOUT="$(without "$version")" \
            WSCHANNEL_TEST_PART=package \
            python_with_sigint "$venv/bin/python" -m pytest -q -p no:cacheprovider \
            -c "$REPO/pyproject.toml" --rootdir "$REPO" \
            --ignore="$REPO/tests/interop" --ignore="$REPO/tests/browser" \
            --ignore="$REPO/tests/test_compliance_runner.py" \
            --ignore="$REPO/tests/test_benchmarks_smoke.py" \
            --ignore="$REPO/tests/test_pubsub_bench.py" \
            --timeout="$limit" --durations=5 $(workers_option) ${select:+-m "$select"} \
            "$REPO/tests" 2>&1 | stamped "$began"
    ) || status=$?
    if [ "$version" = 3.13t ] && [ "$status" = 0 ]; then
        echo "the thread tests again with the GIL on (PYTHON_GIL=1)"
        (
            cd "$run"
            PYTHON_GIL=1 OWN_SESSION=$own_session WSCHANNEL_TEST_INSTALLED=1 \
                WSCHANNEL_TEST_WITHOUT="$(without "$version")" \
                python_with_sigint "$venv/bin/python" -m pytest -q \
                -p no:cacheprovider -c "$REPO/pyproject.toml" --rootdir "$REPO" \
                "$REPO/tests/test_threads.py"
        ) || status=$?
    fi
    echo "took $((SECONDS - began)) s"
    return "$status"
}

# The sdist on its own: built by pip (maturin, cargo) in a fresh virtualenv, then used.
check_sdist() {
    local began=$SECONDS python venv="$WORK/venvs/sdist"
    python=$(interpreter 3.11)
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    # A plain optimised build: the release profile's whole-program LTO costs minutes and
    # changes nothing this checks.
    # The repository's target folder: the dependencies compiled for make dist are reused (the
    # sdist's own crates, at another path, are compiled again).
    CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}" \
        "$venv/bin/python" -m pip install -q --no-binary wschannel "$SDIST"
    echo "built and installed in $((SECONDS - began)) s"
    (cd "$WORK" && "$venv/bin/python" "$REPO/.ci/smoke.py")
}

say "running: ${PYTHONS} sdist (${JOBS} at a time; logs in $LOGS)"
failed=()
pids=()
names=()
# How far a running job is: a suite's last percentage (pytest -q), or what it is doing.
progress_of() {
    local name=$1 log="$LOGS/$1.log" percent
    percent=$(grep -o '\[ *[0-9]*%\]' "$log" 2>/dev/null | tail -n 1 | tr -d '[] ' || true)
    if [ -n "$percent" ]; then
        echo "$name $percent"
    elif [ "$name" = sdist ]; then
        echo "sdist building"
    else
        echo "$name installing"
    fi
}
# Reaps the jobs that have ended (each verdict once); waits a second when none has.
reap() {
    local i ended=0 kept_pids=() kept_names=()
    for i in "${!pids[@]}"; do
        if kill -0 "${pids[$i]}" 2>/dev/null; then
            kept_pids+=("${pids[$i]}") kept_names+=("${names[$i]}")
            continue
        fi
        ended=1
        local name=${names[$i]}
        if wait "${pids[$i]}"; then
            say "$name: passed ($(tail -n 1 "$LOGS/$name.log"))"
        else
            failed+=("$name")
            say "$name: FAILED; its last lines:"
            tail -n 30 "$LOGS/$name.log" | sed 's/^/    /'
            # pytest's summary lines (a multi-line message can push them out of the tail).
            say "$name: the failed tests:"
            grep -E '^ *[0-9]+ s\| (FAILED|ERROR) ' "$LOGS/$name.log" | cut -c1-300 | sed 's/^/    /' || true
        fi
    done
    pids=("${kept_pids[@]}") names=("${kept_names[@]}")
    [ "$ended" = 1 ] || sleep 1
}
# A line every 30 s while jobs run: how far each one is.
last_report=$SECONDS
report() {
    [ $((SECONDS - last_report)) -ge 30 ] || return 0
    last_report=$SECONDS
    local name parts=()
    for name in "${names[@]}"; do parts+=("$(progress_of "$name")"); done
    say "$((SECONDS - start)) s: $(IFS=,; echo "${parts[*]}" | sed 's/,/, /g')"
}
# The suites first, the sdist last: its build waits for cargo's lock when another build holds
# it (make test's Rust checks), and the suites wait on nothing.
for job in $PYTHONS sdist; do
    while [ "${#pids[@]}" -ge "$JOBS" ]; do reap; report; done
    if [ "$job" = sdist ]; then
        check_sdist >"$LOGS/$job.log" 2>&1 &
    else
        run_suite "$job" >"$LOGS/$job.log" 2>&1 &
    fi
    pids+=("$!")
    names+=("$job")
done
while [ "${#pids[@]}" -gt 0 ]; do reap; report; done

for job in $PYTHONS; do
    say "$job: $(grep -E '^[0-9]+ (passed|failed)|(passed|failed|error).* in [0-9.]+s' "$LOGS/$job.log" | head -n 1)"
done
if [ "${#failed[@]}" -gt 0 ]; then
    say "failed: ${failed[*]} (logs: $LOGS); $((SECONDS - start)) s"
    exit 1
fi
say "all passed: sdist ${PYTHONS}; $((SECONDS - start)) s"
