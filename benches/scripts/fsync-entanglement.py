#!/usr/bin/env python3
"""Does one file's fdatasync stall while another file's commits are written?

    python3 benches/scripts/fsync-entanglement.py MODE [DIR]

A WAL-like loop appends 256 bytes to one file and fdatasyncs it, for 15 s,
and reports its latency. With MODE `none` nothing else runs; otherwise a
database-like writer beside it writes 60 new 4 KiB pages (~240 KB) into a
second, 256 MiB file every 100 ms and fdatasyncs it. That second file is
preallocated with fallocate (`fallocate`: unwritten extents, so each first
write converts extents and its fdatasync commits the ext4 journal) or
written full of zeros first (`zeroed`: later writes are overwrites).
"""
import os
import sys
import threading
import time

mode = sys.argv[1]
d = sys.argv[2] if len(sys.argv) > 2 else "."
wal = os.open(f"{d}/entangle-wal.bin", os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_APPEND)
size = 256 << 20
db = os.open(f"{d}/entangle-db.bin", os.O_CREAT | os.O_RDWR | os.O_TRUNC)
if mode == "fallocate":
    os.posix_fallocate(db, 0, size)
elif mode == "zeroed":
    zeros = b"\0" * (1 << 20)
    for _ in range(size >> 20):
        os.write(db, zeros)
elif mode != "none":
    sys.exit("MODE: none | fallocate | zeroed")
os.fsync(db)
stop = False


def writer():
    off, page = 0, os.urandom(4096)
    while not stop:
        for _ in range(60):
            os.pwrite(db, page, off)
            off = (off + 4096) % size
        os.fdatasync(db)
        time.sleep(0.1)


if mode != "none":
    t = threading.Thread(target=writer)
    t.start()
lat, rec, end = [], b"x" * 256, time.time() + 15
while time.time() < end:
    t0 = time.perf_counter()
    os.write(wal, rec)
    os.fdatasync(wal)
    lat.append(time.perf_counter() - t0)
stop = True
lat.sort()
n = len(lat)
print(
    f"{mode:10s} n={n} p50={lat[n // 2] * 1e6:.0f}us p99={lat[int(n * .99)] * 1e6:.0f}us "
    f"p999={lat[int(n * .999)] * 1e6:.0f}us max={lat[-1] * 1e3:.1f}ms "
    f"over50ms={sum(1 for x in lat if x > 0.05)}"
)
for f in ("entangle-wal.bin", "entangle-db.bin"):
    os.unlink(f"{d}/{f}")
