"""Bytes per event of raw_web_events' Parquet files under several writer
settings (scripts/bench-storage.sh runs it on a lake CROW wrote).

usage: storage_settings.py LAKE_DIR

Rewrites the table's files with pyarrow in memory: each file alone (as the
collector flushes them) and each partition as one file (as compaction
leaves them), and prints bytes per event for each setting.
"""
import sys
import pyarrow.parquet as pq, pyarrow as pa, glob, os, io, sys
files = sorted(glob.glob(sys.argv[1].rstrip('/') + '/raw_web_events/*/*.parquet'))
base = sum(os.path.getsize(f) for f in files)
n = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
print(f"files={len(files)} rows={n} bytes={base} B/event={base/n:.1f}")
payload = ['properties','traits','context','integrations']
ts = ['occurred_at','original_timestamp','sent_at','received_at']
def size(tables, **kw):
    tot=0
    for t in tables:
        buf = io.BytesIO(); pq.write_table(t, buf, **kw); tot += len(buf.getvalue())
    return tot
# fresh: per-file rewrite; compacted: per-partition one file
fresh = [pq.read_table(f) for f in files]
parts = {}
for f,t in zip(files,fresh):
    parts.setdefault(os.path.dirname(f), []).append(t)
compact = [pa.concat_tables(v) for v in parts.values()]
cols = fresh[0].column_names
nodict_payload = [c for c in cols if c not in payload]
configs = {
 'snappy, payload no dict (CROW before)': dict(compression='snappy', use_dictionary=nodict_payload),
 'snappy, dict all': dict(compression='snappy', use_dictionary=True),
 'zstd1, dict all': dict(compression='zstd', compression_level=1, use_dictionary=True),
 'zstd3, dict all': dict(compression='zstd', compression_level=3, use_dictionary=True),
 'zstd3, payload no dict': dict(compression='zstd', compression_level=3, use_dictionary=nodict_payload),
 'zstd6, dict all': dict(compression='zstd', compression_level=6, use_dictionary=True),
 'zstd3, dict all but ts; ts delta': dict(compression='zstd', compression_level=3, use_dictionary=[c for c in cols if c not in ts], column_encoding={c:'DELTA_BINARY_PACKED' for c in ts}),
}
for name, kw in configs.items():
    f = size(fresh, **kw); c = size(compact, **kw)
    print(f"{name:40s} fresh {f/n:6.1f} B/ev ({f/base:.2f}x of CROW's)  compacted {c/n:6.1f} B/ev ({c/base:.2f}x)")
