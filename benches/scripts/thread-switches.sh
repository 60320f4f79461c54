#!/usr/bin/env bash
# Context switches and CPU of each server thread, per request, for one load run.
#
#   BENCH=./target/release/cairn-bench benches/scripts/thread-switches.sh SERVER PORT WORKLOAD [FLAGS...]
#
# Starts SERVER (cairn or etcd: same flags) on 127.0.0.1:PORT with a fresh
# data dir, warms it up with 2,000 puts from one client, reads every
# thread's voluntary and involuntary context switches and utime+stime from
# /proc/<pid>/task/*, runs `cairn-bench WORKLOAD FLAGS... --json`, reads them
# again, and prints per thread (threads of one name summed) the switches
# and the microseconds of CPU per request.
set -euo pipefail
bin=$1 port=$2
shift 2
bench=${BENCH:-./target/release/cairn-bench}
. "$(dirname "$0")/start-server.sh"
"$bench" put --clients 1 --conns 1 --total 2000 --endpoints "127.0.0.1:$port" >/dev/null
# One line per thread: tid name voluntary involuntary ticks.
threads() {
    for t in /proc/"$pid"/task/*; do
        printf '%s %s %s %s %s\n' "${t##*/}" "$(tr ' ' _ <"$t/comm")" \
            "$(awk '/^voluntary_ctxt_switches/ {print $2}' "$t/status")" \
            "$(awk '/^nonvoluntary_ctxt_switches/ {print $2}' "$t/status")" \
            "$(awk '{print $14 + $15}' "$t/stat")"
    done
}
threads >"$d/before"
"$bench" "$@" --endpoints "127.0.0.1:$port" --json >"$d/out.json"
threads >"$d/after"
python3 - "$d/before" "$d/after" "$d/out.json" "$(getconf CLK_TCK)" <<'PY'
import json, sys
before, after, out, hz = sys.argv[1:]
read = lambda f: {l.split()[0]: l.split()[1:] for l in open(f)}
b, a = read(before), read(after)
d = json.load(open(out))
n = d["requests"]
rows = {}
for tid, (name, vol, invol, ticks) in a.items():
    name0, vol0, invol0, ticks0 = b.get(tid, (name, 0, 0, 0))
    r = rows.setdefault(name, [0, 0, 0])
    r[0] += int(vol) - int(vol0)
    r[1] += int(invol) - int(invol0)
    r[2] += float(ticks) - float(ticks0)
print(f"{n} requests, {d['throughput']:.0f} req/s, mean {d['latency_us']['mean']:.0f} µs, p50 {d['latency_us']['p50']:.0f} µs")
print(f"{'thread':<18} {'voluntary/req':>14} {'involuntary/req':>16} {'CPU µs/req':>11}")
for name, (vol, invol, ticks) in sorted(rows.items(), key=lambda x: -x[1][2]):
    if vol + invol == 0 and ticks == 0:
        continue
    print(f"{name:<18} {vol / n:>14.2f} {invol / n:>16.2f} {ticks / float(hz) * 1e6 / n:>11.0f}")
PY
