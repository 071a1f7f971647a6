"""Command-line pieces shared by every script: a one-line-error parser and range-checked argparse types.

Every number a user types is checked at parse time against the range its `--help` states, so
no run starts (and writes) with a value that would make it fail later or, worse, succeed wrongly.
"""
import argparse
import contextlib
import math
import os
import signal
import sys
import threading


class InputError(Exception):
    """A user mistake or a broken input: each script's main() reports it as one line, no traceback."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (how a cluster scheduler preempts a job), raised where the program is, like Ctrl-C's
    KeyboardInterrupt: whatever cleans up after an interrupt cleans up after this too."""


@contextlib.contextmanager
def sigterm_interrupts():
    """SIGTERM raises Terminated inside the block (Python's default ends the process at once, no
    message); the previous handler afterwards. Only in the main thread, where Python runs handlers.

    Yields the list of signals received. An exception raised by a handler is lost when the
    signal lands inside a finaliser or a garbage-collection callback (JAX registers one), so a
    long loop should also check the list (callbacks.StopOnSignal does, after every step); the
    "Exception ignored" report of such a lost Terminated is not printed."""
    received = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def raise_terminated(signum, frame):
        received.append(signal.Signals(signum).name)
        raise Terminated(received[-1])

    def unraisable(report):
        if not isinstance(report.exc_value, Terminated):
            previous_hook(report)
    previous, previous_hook = signal.signal(signal.SIGTERM, raise_terminated), sys.unraisablehook
    sys.unraisablehook = unraisable
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = previous_hook


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


@contextlib.contextmanager
def os_errors_as_input(what: str):
    """An OSError inside the block becomes the one-line InputError "cannot <what> (<reason>)",
    e.g. what = "write out/metrics.json" or "create --out out"."""
    try:
        yield
    except OSError as err:
        raise InputError(f"cannot {what} ({err.strerror or err})") from None


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


def duration(seconds: float) -> str:
    """A duration for people: 42 s, 3 min 5 s, 2 h 04 min."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class LineProgress:
    """Progress for a log file: one plain line (no control characters) every `interval` seconds and
    at the end, with the count, the elapsed time and the ETA. The part of tqdm's interface we use."""

    def __init__(self, total, desc, unit, initial=0, stream=None, interval=30.0, clock=None):
        import time
        self.clock = clock or time.monotonic
        self.total, self.desc, self.unit, self.n, self.start_n = total, desc, unit, initial, initial
        self.stream, self.interval, self.postfix = stream or sys.stderr, interval, ""
        self.started = self.last = self.clock()

    def line(self):
        elapsed = self.clock() - self.started
        done = self.n - self.start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = f", ETA {duration((self.total - self.n) / rate)}" if rate > 0 and self.n < self.total else ""
        share = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        return f"{self.desc}: {self.n}/{self.total} {self.unit}{share}, {duration(elapsed)}{eta}{self.postfix}"

    def update(self, n=1):
        self.n += n
        if self.clock() - self.last >= self.interval:
            self.last = self.clock()
            print(self.line(), file=self.stream, flush=True)

    def set_postfix(self, **values):
        self.postfix = "".join(f", {k} {v}" for k, v in values.items())

    def close(self):
        if self.interval is not None:
            print(self.line(), file=self.stream, flush=True)
            self.interval = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress(total, desc, unit, quiet=False, initial=0, stream=None, interval=30.0):
    """A tqdm bar on a terminal; in a log file (stderr not a terminal) a LineProgress; nothing if quiet."""
    from tqdm import tqdm
    stream = stream or sys.stderr
    if quiet or stream.isatty():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=stream, disable=quiet)
    return LineProgress(total, desc, unit, initial, stream, interval)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help with each flag's default, except where there is none to state: no "(default: None)"
    on required flags or flags whose absence the help text explains, no "(default: False)" on switches,
    and none where the help names its default already."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)
