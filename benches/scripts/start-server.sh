# Sourced by the scripts beside it: starts "$bin" (cairn or etcd: same
# flags) as a single member on 127.0.0.1:$port (peers on $port + 1) with a
# fresh data dir in "$d", sets "$pid", stops it and removes "$d" on exit,
# and waits 3 s for it to start. A caller may set "$wrap" to a command that
# the server runs under (e.g. valgrind), and "$ready" to wait for the
# client port instead of 3 s.
d=$(mktemp -d)
${wrap:-} "$bin" --data-dir "$d/data" --listen-client-urls "http://127.0.0.1:$port" \
    --advertise-client-urls "http://127.0.0.1:$port" \
    --listen-peer-urls "http://127.0.0.1:$((port + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
    --initial-cluster "default=http://127.0.0.1:$((port + 1))" >"$d/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$d"' EXIT
if [ -n "${ready:-}" ]; then
    for _ in $(seq 120); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 1
    done
    sleep 1
else
    sleep 3
fi
