"""Rewrite a CROW Delta table's live Parquet files in place under CROW's
former writer settings (Snappy, no dictionaries on the JSON payload columns,
dictionaries elsewhere; pyarrow), so the analyst query set can be timed on
the old layout and the new one in the same run (scripts/bench-storage.sh).

usage: relayout.py TABLE_DIR

The rows, partition values and statistics stay the same, so the Delta log
stays true except for each file's byte size: the `add` actions of the JSON
commits get the new sizes, and checkpoints are removed (every JSON commit of
a benchmark lake is still there, so readers replay those instead). Only for
a copy of a benchmark lake: it edits the log in place.
"""
import glob
import json
import os
import sys

import pyarrow.parquet as pq

# CROW's JSON payload columns (crow_lake::PAYLOAD_COLUMNS): no dictionaries
# under the former settings.
PAYLOAD = {"properties", "traits", "context", "integrations", "payload", "metrics",
           "observations", "timeline", "evidence"}


def main():
    table = sys.argv[1].rstrip("/")
    log = os.path.join(table, "_delta_log")
    commits = sorted(glob.glob(os.path.join(log, "*.json")))
    sizes = {}
    for c in commits:
        for line in open(c):
            action = json.loads(line)
            if "add" in action:
                sizes[action["add"]["path"]] = None
            elif "remove" in action:
                sizes.pop(action["remove"]["path"], None)
    for path in sizes:
        f = os.path.join(table, path)
        t = pq.read_table(f, partitioning=None)
        dictionary = [c for c in t.column_names if c not in PAYLOAD]
        pq.write_table(t, f + ".tmp", compression="snappy", use_dictionary=dictionary,
                       write_page_index=True)
        os.replace(f + ".tmp", f)
        sizes[path] = os.path.getsize(f)
    for c in commits:
        out = []
        for line in open(c):
            action = json.loads(line)
            if "add" in action and sizes.get(action["add"]["path"]) is not None:
                action["add"]["size"] = sizes[action["add"]["path"]]
            out.append(json.dumps(action, separators=(",", ":")))
        with open(c, "w") as f:
            f.write("\n".join(out) + "\n")
    for p in glob.glob(os.path.join(log, "*.checkpoint*.parquet")) + [
            os.path.join(log, "_last_checkpoint")]:
        if os.path.exists(p):
            os.remove(p)
    print(f"{len(sizes)} files rewritten", file=sys.stderr)


if __name__ == "__main__":
    main()
