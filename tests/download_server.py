"""What the download_coco.sh tests share: small zip files laid out like images.cocodataset.org,
a local HTTP server on 127.0.0.1 that serves them (HEAD and Range requests, 206 Partial
Content, faults on demand) and records every request, and the runner of the script. A test
module binds the fixtures by name (`server = download_server.server`).
"""

import io
import json
import os
import random
import re
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import REPO

SCRIPT = REPO / "download_coco.sh"
ANN = "annotations_trainval2017"


# ---------------------------------------------------------------- test data
def _rand(seed, n):
    return random.Random(seed).randbytes(n)


def _make_zip(members, compression=zipfile.ZIP_STORED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


IMAGES = {
    "train2017": {f"{i:012d}.jpg": _rand(i, 30_000 + i) for i in (1, 2, 3)},
    "val2017": {f"{i:012d}.jpg": _rand(i, 20_000 + i) for i in (139, 285)},
    "test2017": {f"{i:012d}.jpg": _rand(i, 5_000) for i in (16,)},
}
ANNOTATIONS = {
    name: json.dumps({"file": name, "annotations": [{"id": k, "keypoints": [k] * 51}
                                                    for k in range(20)]}).encode()
    for name in ("person_keypoints_train2017.json", "person_keypoints_val2017.json",
                 "instances_train2017.json", "instances_val2017.json")
}
ZIPS = {
    f"/zips/{split}.zip": _make_zip({f"{split}/{f}": d for f, d in files.items()})
    for split, files in IMAGES.items()
}
ZIPS[f"/annotations/{ANN}.zip"] = _make_zip(
    {f"annotations/{f}": d for f, d in ANNOTATIONS.items()}, zipfile.ZIP_DEFLATED)
TRAIN = "/zips/train2017.zip"
VAL = "/zips/val2017.zip"
ANN_PATH = f"/annotations/{ANN}.zip"


def corrupted(data):
    """Same size, a few bytes flipped in the middle (inside a member's data)."""
    b = bytearray(data)
    mid = len(b) // 2
    for i in range(mid, mid + 16):
        b[i] ^= 0xFF
    return bytes(b)


# ---------------------------------------------------------------- HTTP server
class State:
    def __init__(self):
        self.files = dict(ZIPS)
        self.requests = []            # (method, path, Range header or None)
        self.lock = threading.Lock()
        self.head_length = {}         # path -> Content-Length to claim on HEAD (None: omit)
        self.truncate_once = set()    # paths whose next GET breaks off half-way
        self.ignore_range = False     # act like a server without Range support

    def log(self):
        with self.lock:
            return list(self.requests)

    def clear(self):
        with self.lock:
            self.requests.clear()


def _handler(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_HEAD(self):
            self._serve(head=True)

        def do_GET(self):
            self._serve(head=False)

        def _serve(self, head):
            rng = self.headers.get("Range")
            with state.lock:
                state.requests.append((self.command, self.path, rng))
            data = state.files.get(self.path)
            if data is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            total = len(data)
            if head:
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Accept-Ranges", "bytes")
                length = state.head_length.get(self.path, total)
                if length is not None:
                    self.send_header("Content-Length", str(length))
                self.end_headers()
                return
            start, end, status = 0, total - 1, 200
            if rng and not state.ignore_range:
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
                start = int(m[1]) if m else total
                if start >= total:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{total}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                end = min(int(m[2]), total - 1) if m[2] else total - 1
                status = 206
            body = data[start:end + 1]
            self.send_response(status)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(body)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
            self.end_headers()
            if self.path in state.truncate_once:
                state.truncate_once.discard(self.path)
                self.wfile.write(body[:len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server():
    state = State()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


# ---------------------------------------------------------------- running the script
@pytest.fixture(scope="module")
def path_without(tmp_path_factory):
    """PATH value that has every command of the current PATH except `names`."""
    cache = {}

    def make(*names):
        if names in cache:
            return cache[names]
        d = tmp_path_factory.mktemp("bin-without-" + "-".join(names))
        for entry in os.environ.get("PATH", "").split(os.pathsep):
            if not entry or not os.path.isdir(entry):
                continue
            for name in os.listdir(entry):
                src = os.path.join(entry, name)
                if name in names or (d / name).exists() or not os.access(src, os.X_OK):
                    continue
                (d / name).symlink_to(src)
        if "python3" not in names:  # make sure python3 is a working interpreter
            (d / "python3").unlink(missing_ok=True)
            (d / "python3").symlink_to(sys.executable)
        cache[names] = str(d)
        return cache[names]

    return make


def run(root, *args, base_url=None, path=None):
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(NO_PROXY="*", no_proxy="*", DOWNLOAD_COCO_RETRY_DELAY="0",
               CURL_HOME=str(root))  # ignore any ~/.curlrc
    if path is not None:
        env["PATH"] = path
    cmd = [str(SCRIPT), "--root", str(root)]
    if base_url is not None:
        cmd += ["--base-url", base_url]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=60)


def assert_ok(res):
    assert res.returncode == 0, f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"


def assert_images(root, split):
    d = root / "images" / split
    assert sorted(p.name for p in d.iterdir()) == sorted(IMAGES[split])
    for name, data in IMAGES[split].items():
        assert (d / name).read_bytes() == data
    assert (root / "images" / f".{split}.complete").is_file()


def assert_annotations(root):
    for name, data in ANNOTATIONS.items():
        assert (root / "annotations" / name).read_bytes() == data
        json.loads((root / "annotations" / name).read_text())
    assert (root / "annotations" / f".{ANN}.complete").is_file()


def leftovers(root):
    """Temp dirs, partial downloads and the like that a finished run must not leave."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name.endswith((".tmp", ".old", ".part", ".corrupt")))


def gets(state):
    return [(path, rng) for method, path, rng in state.log() if method == "GET"]
