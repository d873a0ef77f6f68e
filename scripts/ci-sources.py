#!/usr/bin/env python3
"""Keep cargo's cached build of CROW's own crates usable across fresh clones.

Cargo decides whether a workspace crate is up to date by its source files'
modification times, and a fresh clone gives every file a new one, so with
nothing else every CI run rebuilds all of CROW's crates (~150 s on two
cores). This keeps, beside the cached target directory, the content hash of
every tracked file as the cached build compiled it:

    ci-sources.py record LIST    # after a build that finished
    ci-sources.py restore LIST   # before the next build

`restore` gives a file whose content is the same as when the cached build
compiled it an old modification time (2000-01-01), so cargo reuses what was
built from it; a changed or new file keeps its new time, so whatever uses it
is rebuilt. `restore` then removes the list: a build that fails or is
interrupted leaves none, and the run after it takes nothing as built.
"""
import hashlib
import os
import subprocess
import sys

OLD = 946684800  # 2000-01-01T00:00:00Z


def tracked():
    """The tracked files, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return [p.decode("utf-8", "surrogateescape") for p in out.split(b"\0") if p]


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record(listing):
    paths = tracked()
    if paths is None:
        return
    tmp = listing + ".tmp"
    with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as out:
        for path in paths:
            if os.path.isfile(path) and not os.path.islink(path):
                out.write(f"{digest(path)} {path}\n")
    os.replace(tmp, listing)


def restore(listing):
    built = {}
    try:
        with open(listing, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                sha, _, path = line.rstrip("\n").partition(" ")
                built[path] = sha
    except FileNotFoundError:
        print("== sources: no list of a finished build; CROW's crates build afresh")
        return
    os.remove(listing)
    paths = tracked()
    if paths is None:
        print("== sources: not a git checkout; CROW's crates build afresh")
        return
    same = changed = 0
    for path in paths:
        if not os.path.isfile(path) or os.path.islink(path):
            continue
        if built.get(path) == digest(path):
            os.utime(path, (OLD, OLD))
            same += 1
        else:
            changed += 1
    print(f"== sources: {same} files as the cached build compiled them, {changed} changed or new")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("record", "restore"):
        sys.exit("usage: ci-sources.py record|restore LIST")
    {"record": record, "restore": restore}[sys.argv[1]](sys.argv[2])
