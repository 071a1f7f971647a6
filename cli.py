"""Command-line pieces shared by every script: a one-line-error parser and range-checked argparse types.

Every number a user types is checked at parse time against the range its `--help` states, so
no run starts (and writes) with a value that would make it fail later or, worse, succeed wrongly.
"""
import argparse
import math
import os


class InputError(Exception):
    """A user mistake or a broken input: each script's main() reports it as one line, no traceback."""


def check_out_dir(path: str):
    """InputError, before any work, if --out cannot be (or become) a writable folder.

    Nothing is created here, so a run that fails later on its inputs leaves no empty --out behind.
    """
    existing = path
    while existing and not os.path.exists(existing):
        existing = os.path.dirname(existing.rstrip(os.sep))
    existing = existing or "."
    if not os.path.isdir(existing):
        raise InputError(f"--out {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"--out {path}: {existing} is not writable")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (no usage block), like every other error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def int_in(low: int, high: int | None = None):
    """An argparse type: an integer in [low, high] (no upper bound when high is None)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            within = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be an integer {within}, not {text!r}")
        return value
    return parse


def number(low: float, high: float = math.inf, above: bool = False):
    """An argparse type: a finite number >= low (> low if `above`) and <= high; NaN is refused."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = math.isfinite(value) and (value > low if above else value >= low) and value <= high
        if not ok:
            wanted = f"in [{low:g}, {high:g}]" if math.isfinite(high) else f"{'>' if above else '>='} {low:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number {wanted}, not {text!r}")
        return value
    return parse


def split_name(text: str) -> str:
    """An argparse type: a COCO split name such as val2017; it becomes part of paths, so no separators."""
    if not text or not all(c.isalnum() or c in "_-" for c in text):
        raise argparse.ArgumentTypeError(f"must be a split name like val2017 (letters, digits, _ and -), "
                                         f"not {text!r}")
    return text
