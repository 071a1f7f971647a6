"""download_coco.sh's rows of the bad-input table (tests/test_bad_inputs.py).

Every row fails before the first transfer: --base-url points at a closed local port, so a
row that got as far as downloading would fail with another message. tests/test_download.py
covers the faults that need a server (broken transfers, corrupt archives, missing tools).
"""
from bad_input_table import Case, write

OUT = "root"  # the name of {out} in each row's folder: a --root that does not exist yet
DL = "download_coco.sh"
OFFLINE = ["--base-url", "http://127.0.0.1:9"]
ROOT = ["--root", "{out}", *OFFLINE]

CASES = [
    Case("unknown option", DL, ROOT + ["--bogus"], 2, r"^download_coco\.sh: error: unknown option '--bogus' \(see --help\)$"),
    Case("unknown split", DL, ROOT + ["--splits", "train2018"], 2,
         r"unknown split 'train2018' in --splits; choose from train2017, val2017, test2017"),
    Case("empty split in a list", DL, ROOT + ["--splits", "train2017,,val2017"], 2, r"empty split name in --splits"),
    Case("splits empty", DL, ROOT + ["--splits", ""], 2, r"option --splits needs a value"),
    Case("splits= empty", DL, ROOT + ["--splits="], 2, r"--splits needs at least one split"),
    Case("splits without a value", DL, ROOT + ["--splits"], 2, r"option --splits needs a value"),
    Case("splits followed by a flag", DL, ROOT + ["--splits", "--keep-zips"], 2,
         r"option --splits needs a value, got '--keep-zips'"),
    Case("base-url not a URL", DL, ["--root", "{out}", "--base-url", "not a url"], 2, r"--base-url must be a URL"),
    Case("extra argument", DL, ROOT + ["train2017"], 2, r"unexpected argument 'train2017'"),
    Case("root is a file", DL, ["--root", "{a_file}", *OFFLINE, "--annotations-only"], 1,
         r"--root .*a_file is a file, not a folder$", ()),
    Case("root cannot be created", DL, ["--root", "/proc/no/root", *OFFLINE, "--annotations-only"], 1,
         r"cannot create --root /proc/no/root", ("/proc/no/root",)),
]


def build_inputs(tmp):
    return {"a_file": str(write(tmp / "a_file", "x\n"))}
