"""What a run folder (--out) is, and the rules for starting, resuming and reading one.

    runs/NAME/config.json   the TrainConfig (augment nested) plus the data's facts: joints, input_size
    runs/NAME/split.json    the training and validation image ids (for evaluate.py --run)
    runs/NAME/log.csv       one row per finished epoch (Keras' CSVLogger), cut back on --resume
    runs/NAME/backup/       the training state after each epoch (callbacks.Backup)
    runs/NAME/.lock         locked (fcntl) while a model.py process trains there (FolderLock)

A run's identity is RUN_IDENTITY plus the data's facts: --resume refuses to change them.
A folder that holds a run (RUN_MARKS) takes a new one only with --overwrite, and never while
another process trains there. Every file here is written atomically (atomic.write_atomic), so
a kill never leaves half of one.
"""
import csv
import fcntl
import io
import json
import os
from dataclasses import asdict

import numpy as np

from figure_pose.core.atomic import remove_path, write_atomic, write_json
from figure_pose.core.cli import InputError

# What a run is: --resume refuses to change these (they change the model or the data; --seed
# picks the validation split), nor the data's joints and input size (train() reads them).
# Everything else (--epochs, --workers, --lr, ...) may change.
RUN_IDENTITY = ("data", "val_data", "arch", "size", "width", "depth", "loss", "backbone",
                "backbone_batchnorm", "seed")
# What makes a folder a run's (and any *.keras); a new run there needs --resume or --overwrite.
RUN_MARKS = ("config.json", "log.csv", "backup")
# What --overwrite (a new run in an old run's folder) deletes first: the old run's outputs.
RUN_OUTPUTS = ("backup", "log.csv", "best.keras", "last.keras", "curves.png", "eval", "tb", "split.json")


def run_files(folder):
    """The names in `folder` that show a run is there (RUN_MARKS, *.keras), sorted; [] if none."""
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return sorted(n for n in names if n in RUN_MARKS or n.endswith(".keras"))


def check_new_run(cfg):
    """InputError unless cfg.out may take this run: it holds no run, or --resume or --overwrite says
    what to do with the one there (a new run would silently replace its backup, log and checkpoints)."""
    found = [] if cfg.resume or cfg.overwrite else run_files(cfg.out)
    if found:
        raise InputError(f"--out {cfg.out} holds a run ({', '.join(found)}): continue it with --resume, "
                         "start afresh there with --overwrite (deletes it), or give another --out")


class FolderLock:
    """An exclusive lock on FOLDER/.lock while a run trains there, so that a second model.py into the
    same folder (with --resume or --overwrite too) is refused instead of writing the same files.

    flock(2): the kernel drops it when the process ends, however it ends (kill -9 too), so no
    stale lock is left; `release` drops it earlier (a run in a test process). The file holds the
    owner's pid for the message; it is never deleted (deleting a lock file races)."""

    NAME = ".lock"

    def __init__(self, folder):
        self.folder, self.fd = folder, None

    def acquire(self):
        """Take the lock (the folder must exist); InputError naming the owner's pid if a live run holds it.
        A file system without flock gets a note and no lock."""
        fd = os.open(os.path.join(self.folder, self.NAME), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise InputError(f"--out {self.folder} is in use by another model.py run, still training there "
                             f"(pid {owner}): let it end or stop it, or give another --out") from None
        except OSError as err:
            os.close(fd)
            print(f"note: cannot lock {self.folder} ({err.strerror or err}); a second run into it would not be "
                  "refused", flush=True)
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def read_run_config(cfg):
    """The config.json of the run in cfg.out as a dict; InputError (one line) when there is none
    or it does not read as a JSON object."""
    path = os.path.join(cfg.out, "config.json")
    if not os.path.exists(path):
        raise InputError(f"--resume: {cfg.out} holds no run to resume (no config.json); drop --resume to start one")
    try:
        with open(path) as f:
            run = json.load(f)
        if not isinstance(run, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        raise InputError(f"--resume: cannot read {path} ({err})") from None
    return run


def check_resume(cfg, facts):
    """InputError unless cfg.out holds a run (config.json) made with the same model and data.

    facts: the data's {"joints": J, "input_size": S}. The list of differences is one line:
    every RUN_IDENTITY flag and data fact that differs.
    """
    run = read_run_config(cfg)
    now = {**asdict(cfg), **facts}
    keys = [k for k in (*RUN_IDENTITY, *facts) if k in run and not (k == "size" and "input_size" in run)]
    described = {"input_size": "--size {}", "joints": "{} joints in --data"}  # size: the effective one
    changed = [described.get(k, f"--{k.replace('_', '-')} {{}}").format(now[k]) + f" (the run has {run[k]})"
               for k in keys if run[k] != now[k]]
    if changed:
        raise InputError(f"--resume: {cfg.out} was trained with other settings: {'; '.join(changed)}; "
                         "resume with the run's flags, or train into another --out")


def prepare_out_dir(cfg, facts, lock=None):
    """Create cfg.out, take its `lock` (a FolderLock; None: a worker's own folder), check again that it
    may take this run (another process may have started one since check_new_run), and write
    config.json (the TrainConfig with the data's facts, for --resume to compare). Without --resume,
    the old run's outputs (RUN_OUTPUTS; --overwrite) are deleted first, so the run starts fresh."""
    try:
        os.makedirs(cfg.out, exist_ok=True)
        if lock is not None:
            lock.acquire()
        check_new_run(cfg)
        if not cfg.resume:
            for name in RUN_OUTPUTS:
                remove_path(os.path.join(cfg.out, name))
        write_json(os.path.join(cfg.out, "config.json"), {**asdict(cfg), **facts}, indent=1)
    except OSError as err:
        raise InputError(f"cannot create --out {cfg.out} ({err.strerror or err})") from None


def write_split(cfg, train, val):
    """split.json in cfg.out: which figures trained and which validated (image ids), so that
    evaluate.py --run scores the held-out images only and can say when figures were trained on."""
    val_ids = np.unique(val.small_fields()["image_id"]).astype(int).tolist()
    train_ids = np.unique(train.small_fields()["image_id"]).astype(int).tolist()
    split = {"train_data": cfg.data, "val_data": cfg.val_data or cfg.data,
             "held_out": not cfg.val_data, "seed": cfg.seed,
             "note": "held_out: the validation images are a seeded 20% of --data's images (never trained on)"
                     if not cfg.val_data else "validation figures: all of --val-data",
             "val_image_ids": val_ids, "train_image_ids": train_ids}
    try:
        write_json(os.path.join(cfg.out, "split.json"), split, indent=None)
    except OSError as err:
        raise InputError(f"cannot write {cfg.out}/split.json ({err.strerror or err})") from None


def trim_log(path, epochs):
    """Keep only the first `epochs` epochs' rows of log.csv (the resumed run writes the rest
    again: a kill may have left a row, or half of one, that no backup covers); returns them
    as dicts of strings."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return []
    header = rows[0]
    keep = [r for r in rows[1:] if len(r) == len(header) and r[0].isdigit() and int(r[0]) < epochs]
    text = io.StringIO()
    csv.writer(text).writerows([header, *keep])  # the dialect CSVLogger writes
    write_atomic(path, text.getvalue())
    return [dict(zip(header, r)) for r in keep]


def best_logged(rows, key="val_pck@0.2"):
    """The best finite `key` of log.csv rows (trim_log's), -inf if none: best.keras holds it already."""
    values = [float(row.get(key) or "nan") for row in rows]
    return max((v for v in values if np.isfinite(v)), default=-np.inf)
