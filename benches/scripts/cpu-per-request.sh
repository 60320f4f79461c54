#!/usr/bin/env bash
# CPU per request of a server and of the load generator, for one load run.
#
#   BENCH=./target/release/cairn-bench benches/scripts/cpu-per-request.sh SERVER PORT WORKLOAD [FLAGS...]
#
# Starts SERVER (cairn or etcd: same flags) on 127.0.0.1:PORT with a fresh
# data dir, reads its utime+stime from /proc/<pid>/stat, runs
# `cairn-bench WORKLOAD FLAGS... --json` against it under /usr/bin/time,
# reads the server's CPU again, and prints requests, req/s, p99 and the
# microseconds of CPU per request of each side.
set -euo pipefail
bin=$1 port=$2
shift 2
bench=${BENCH:-./target/release/cairn-bench}
. "$(dirname "$0")/start-server.sh"
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks)
/usr/bin/time -f "%U %S" -o "$d/client.time" "$bench" "$@" --endpoints "127.0.0.1:$port" --json >"$d/out.json"
t1=$(ticks)
python3 - "$d/out.json" "$d/client.time" "$t0" "$t1" "$hz" "$(basename "$bin")" <<'PY'
import json, sys
out, ctime, t0, t1, hz, name = sys.argv[1:]
d = json.load(open(out))
n = d["requests"]
user, system = map(float, open(ctime).read().split()[-2:])
server_us = (float(t1) - float(t0)) / float(hz) * 1e6 / n
client_us = (user + system) * 1e6 / n
print(f"{name} requests={n} rps={d['throughput']:.0f} p99ms={d['latency_us']['p99'] / 1000:.1f} "
      f"errors={d['errors']} server_us/req={server_us:.0f} client_us/req={client_us:.0f}")
PY
