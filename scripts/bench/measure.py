#!/usr/bin/env python3
"""Run a command; print its wall time and peak memory (max RSS) as JSON on
stderr's last line, pass its stdout through.

usage: measure.py COMMAND [ARGS...]
"""
import json
import resource
import subprocess
import sys
import time

start = time.perf_counter()
proc = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE)
elapsed = time.perf_counter() - start
sys.stdout.buffer.write(proc.stdout)
sys.stdout.flush()
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"seconds": round(elapsed, 3), "peak_mib": round(peak_kib / 1024, 1),
                  "exit": proc.returncode}), file=sys.stderr)
sys.exit(proc.returncode)
