"""Atomic outputs: every file the scripts write goes through a temporary name and a rename.

A kill (even `kill -9`) or a full disk never leaves half a file under the real name: readers
see the old file or the new one. The temporary name is `<path>.partial` (ignored by git;
the next run overwrites it).
"""
import json
import os
import shutil


def write_atomic(path, data, sync=False):
    """Write `data` (bytes or str) to `path` via `<path>.partial` and a rename; OSError on failure.

    sync: fsync before the rename (for a progress file a resumed run relies on).
    """
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path, obj, indent=2, sync=False):
    """`obj` as JSON (indent None: one line), atomically."""
    write_atomic(path, json.dumps(obj, indent=indent), sync)


def copy_atomic(src, dst):
    """Copy the file `src` to `dst` via `<dst>.partial` and a rename; OSError on failure."""
    shutil.copyfile(src, dst + ".partial")
    os.replace(dst + ".partial", dst)


def remove_path(path):
    """Remove a file or folder if it is there (the leftover of a killed run)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)
