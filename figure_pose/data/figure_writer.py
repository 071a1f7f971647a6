"""Writing `coco.npy`: figure records streamed to one .npy file that a killed run resumes.

`FigureWriter` appends records (dtype `figures.figure_dtype`) to `<out>.partial`, a valid
.npy layout whose header (HEADER_BYTES, rewritten with the final count by `finish`) is
reserved up front. `checkpoint` makes the records on disk safe: it fsyncs them and writes
`<out>.partial.json` (settings, records, image tasks done, CRC-32, counts, problems)
atomically, so `--resume` continues from there (`read_progress`) and cuts off anything
written after it. `finish` writes the sidecar `<out>.json`, then renames the data into place.

Sidecar consistency. The sidecar is written just before `<out>.partial` is renamed to
`<out>`, and names the data file it describes: `data_bytes` (its size) and `data_crc32`
(of its records). A kill between the two leaves the old `<out>` beside a sidecar of another
size, which `figures.read_sidecar` refuses; the partial file and its progress are still
there, so `--resume` finishes the run without redoing any work. (A two-file rename cannot
be atomic; naming the data in the sidecar makes the gap visible.)

Nothing happens on import.
"""
import json
import os
import time
import zlib

import numpy as np

from figure_pose.core.atomic import write_json
from figure_pose.core.cli import InputError

HEADER_BYTES = 4096  # reserved .npy header, rewritten in place with the final count


def check_writable(out):
    """Fail early, with one line, if `out`, its sidecar and its partial file cannot be created."""
    directory = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(directory):
        raise InputError(f"cannot write --out {out}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise InputError(f"cannot write --out {out}: directory {directory} is not writable")
    for path in (out, out + ".json", out + ".partial"):
        if os.path.isdir(path):
            raise InputError(f"cannot write --out {out}: {path} is a directory")


def npy_header(dtype, count):
    """A .npy v1.0 header for a 1-D structured array, padded to exactly HEADER_BYTES."""
    text = "{'descr': %r, 'fortran_order': False, 'shape': (%d,), }" % (
        np.lib.format.dtype_to_descr(dtype), count)
    pad = HEADER_BYTES - 10 - len(text) - 1
    if pad < 0:
        raise ValueError("record dtype too large for the reserved .npy header")
    return b"\x93NUMPY\x01\x00" + np.uint16(HEADER_BYTES - 10).tobytes() + (text + " " * pad + "\n").encode("latin1")


PROGRESS_FIELDS = {"records": int, "tasks_done": int, "crc32": int, "counts": dict, "problems": list}


def read_progress(path, settings_key, partial_bytes, record_bytes):
    """The saved state of a killed run with the same settings, or None to start over.

    Raises InputError if the file is damaged: our writes are atomic, so damage came from
    elsewhere, and resuming from it could write wrong figures.
    """
    try:
        with open(path) as f:
            saved = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"cannot --resume: {path} is damaged (not JSON: {err}); "
                         f"run without --resume to start over") from None
    if not isinstance(saved, dict) or saved.get("settings") != settings_key:
        return None
    bad = [k for k, kind in PROGRESS_FIELDS.items()
           if not isinstance(saved.get(k), kind) or isinstance(saved.get(k), bool)]
    if not bad and HEADER_BYTES + saved["records"] * record_bytes > partial_bytes:
        bad = ["records (more than the partial file holds)"]
    if bad or saved["records"] < 0 or saved["tasks_done"] < 0:
        raise InputError(f"cannot --resume: {path} is damaged ({', '.join(bad) or 'negative counts'}); "
                         f"run without --resume to start over")
    return saved


class FigureWriter:
    """Streams records to `<out>.partial`; `finish()` renames it to `<out>`.

    The partial file is a valid .npy layout with a reserved header; `<out>.partial.json`
    records how many records and image tasks are safely on disk (and their CRC-32), so a
    killed run can `resume` from there (anything written after the last checkpoint is cut off).
    `state` holds that progress: "records", "tasks_done", "counts" and "problems" found
    while running, as of the last checkpoint (or the resumed run's).
    """

    def __init__(self, out, dtype, settings_key, resume):
        self.out, self.dtype, self.partial = out, dtype, out + ".partial"
        self.progress_path = self.partial + ".json"
        self.state = {"settings": settings_key, "records": 0, "tasks_done": 0, "crc32": 0, "counts": {},
                      "problems": []}
        if resume:
            self.state = self.resumed_state(settings_key) or self.state
        self.last_checkpoint = time.time()
        self.file = open(self.partial, "r+b" if self.state["records"] else "wb")
        self.file.truncate(HEADER_BYTES + self.state["records"] * dtype.itemsize)
        self.file.seek(0)
        self.file.write(npy_header(dtype, 0))
        self.file.seek(0, os.SEEK_END)

    def resumed_state(self, settings_key):
        """The progress of a stopped run of the same settings, or None (said on stdout) to start over."""
        if not (os.path.exists(self.partial) and os.path.exists(self.progress_path)):
            print(f"--resume: no stopped run of {self.out} to continue; starting from the beginning")
            return None
        saved = read_progress(self.progress_path, settings_key, os.path.getsize(self.partial), self.dtype.itemsize)
        if saved is None:
            print(f"--resume: {self.partial} was made with other settings or annotations; starting over")
        return saved

    def append(self, records):
        data = records.tobytes()
        self.file.write(data)
        self.state["records"] += len(records)
        self.state["crc32"] = zlib.crc32(data, self.state["crc32"])

    def checkpoint(self, tasks_done, counts, problems):
        """Make the records written so far safe for --resume, with the run's progress."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.state.update(tasks_done=tasks_done, counts=dict(counts), problems=problems)
        write_json(self.progress_path, self.state, sync=True)
        self.last_checkpoint = time.time()

    def checkpoint_every(self, seconds, tasks_done, counts, problems):
        """checkpoint() if `seconds` have passed since the last one."""
        if time.time() - self.last_checkpoint >= seconds:
            self.checkpoint(tasks_done, counts, problems)

    def finish(self, sidecar):
        """Write the final header, then the sidecar naming the data (size, record CRC-32), then
        rename: a kill between the last two leaves a sidecar that read_sidecar tells from the
        old `<out>`, and the partial file and progress that --resume completes."""
        self.file.seek(0)
        self.file.write(npy_header(self.dtype, self.state["records"]))
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        write_json(self.out + ".json", dict(sidecar, data_bytes=os.path.getsize(self.partial),
                                            data_crc32=self.state["crc32"]), sync=True)
        os.replace(self.partial, self.out)
        if os.path.exists(self.progress_path):
            os.remove(self.progress_path)

    def discard(self):
        """Remove the partial file and its progress (a run that wrote nothing)."""
        self.file.close()
        for path in (self.partial, self.progress_path):
            if os.path.exists(path):
                os.remove(path)
