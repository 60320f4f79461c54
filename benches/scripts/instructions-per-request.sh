#!/usr/bin/env bash
# Instructions a server executes per request, counted by callgrind: the same
# figure run after run for the same binary and load, whatever else the host
# is doing, so two builds can be told apart by a fraction of a percent
# where wall-clock and CPU-time figures on a shared host cannot.
#
#   BENCH=./target/release/cairn-bench benches/scripts/instructions-per-request.sh SERVER PORT WORKLOAD [FLAGS...]
#
# Starts SERVER (cairn or etcd: same flags) under `valgrind --tool=callgrind`
# on 127.0.0.1:PORT with a fresh data dir, runs the workload once to warm it
# up, zeroes the counts, runs it again, dumps them, and prints the
# instructions executed per request of the second run. Use small loads
# (tens of clients, ~20,000 requests): under valgrind the server runs some
# 50 times slower, one thread at a time.
set -euo pipefail
bin=$1 port=$2
shift 2
bench=${BENCH:-./target/release/cairn-bench}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install -y valgrind)" >&2; exit 1; }
cg=$(mktemp -d)
wrap="valgrind --tool=callgrind --callgrind-out-file=$cg/out"
ready=1
. "$(dirname "$0")/start-server.sh"
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$d" "$cg"' EXIT
"$bench" "$@" --endpoints "127.0.0.1:$port" --json >/dev/null
callgrind_control -z "$pid" >/dev/null
"$bench" "$@" --endpoints "127.0.0.1:$port" --json >"$d/out.json"
callgrind_control -d "$pid" >/dev/null
for _ in $(seq 30); do [ -s "$cg/out.1" ] && break; sleep 1; done
python3 - "$d/out.json" "$cg/out.1" "$(basename "$bin")" <<'PY'
import json, sys
out, dump, name = sys.argv[1:]
n = json.load(open(out))["requests"]
ir = next(int(l.split()[1]) for l in open(dump) if l.startswith("summary:"))
print(f"{name} requests={n} instructions={ir} instructions/req={ir / n:.0f}")
PY
