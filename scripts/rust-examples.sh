#!/usr/bin/env bash
# Runs the Rust crate's echo examples against each other on 127.0.0.1 (blocking and tokio,
# each server with each client) and checks the echoed bytes. Bounded: every program has a
# time limit. Prints "rust examples: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -q -p wschannel --features tokio --examples
examples=${CARGO_TARGET_DIR:-target}/debug/examples
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

expected='echoed: hello
echoed: wschannel é 🦀
echoed: 65536 bytes
closed: Some(1000)'

passed=0
failed=0
for server in echo_server tokio_echo_server; do
    for client in echo_client tokio_echo_client; do
        log=$work/$server-$client.out  # its own: an old one may still name the last port
        # One connection, then the server exits by itself.
        timeout 30 "$examples/$server" 127.0.0.1:0 1 >"$log" 2>&1 &
        server_pid=$!
        address=
        for _ in $(seq 100); do  # up to 10 s for the server to listen
            address=$(sed -n 's/^listening on //p' "$log")
            [[ -n $address ]] && break
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        got=$(timeout 30 "$examples/$client" "$address" hello 'wschannel é 🦀' 2>&1) || true
        if wait "$server_pid" && [[ -n $address && $got == "$expected" ]]; then
            echo "ok: $client -> $server"
            passed=$((passed + 1))
        else
            echo "FAILED: $client -> $server"
            echo "  client said: $got"
            echo "  server said: $(cat "$log")"
            failed=$((failed + 1))
        fi
    done
done
echo "rust examples: $passed passed, $failed failed"
[[ $failed == 0 ]]
