#!/usr/bin/env python3
"""Run a command; print its wall time, peak memory (max RSS) and the bytes
it read (`rchar` of /proc/PID/io: every byte its read calls returned, from
the page cache or the disk, sampled every 10 ms until it exits) as JSON on
stderr's last line, pass its stdout through.

usage: measure.py COMMAND [ARGS...]
"""
import json
import resource
import subprocess
import sys
import threading
import time

start = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
read = [0]


def sample():
    path = f"/proc/{proc.pid}/io"
    while proc.poll() is None:
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("rchar:"):
                        read[0] = max(read[0], int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.01)


sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
out, _ = proc.communicate()
elapsed = time.perf_counter() - start
sampler.join()
sys.stdout.buffer.write(out)
sys.stdout.flush()
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"seconds": round(elapsed, 3), "peak_mib": round(peak_kib / 1024, 1),
                  "read_mib": round(read[0] / 2**20, 2), "exit": proc.returncode}),
      file=sys.stderr)
sys.exit(proc.returncode)
