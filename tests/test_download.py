"""Tests for download_coco.sh against a local HTTP server on 127.0.0.1 (download_server.py).

The server serves small zip files laid out like images.cocodataset.org
(/zips/<split>.zip, /annotations/annotations_trainval2017.zip), supports HEAD
and Range requests (206 Partial Content) so curl's resume can be exercised, and
records every request so the tests can check what the script asked for.
Nothing but 127.0.0.1 is ever contacted.
"""

import os
import re
import shutil
import subprocess

import download_server
import pytest
from download_server import (ANN, ANN_PATH, SCRIPT, TRAIN, VAL, ZIPS, assert_annotations, assert_images, assert_ok,
                             corrupted, gets, leftovers, run)

pytestmark = [
    pytest.mark.skipif(shutil.which("curl") is None,
                       reason="download_coco.sh needs curl, which is not installed"),
    pytest.mark.skipif(shutil.which("bash") is None,
                       reason="download_coco.sh is a bash script and bash is not installed"),
]
server = download_server.server
path_without = download_server.path_without


# ---------------------------------------------------------------- tests
def test_script_is_executable():
    assert os.access(SCRIPT, os.X_OK)


def test_full_download_extracts_and_removes_zips(tmp_path, server):
    res = run(tmp_path, base_url=server.url)
    assert_ok(res)
    assert_images(tmp_path, "train2017")
    assert_images(tmp_path, "val2017")
    assert not (tmp_path / "images" / "test2017").exists()
    assert_annotations(tmp_path)
    assert not list((tmp_path / "downloads").glob("*.zip*")), "zips should be deleted"
    assert leftovers(tmp_path) == []
    assert sorted(gets(server)) == sorted([(TRAIN, None), (VAL, None), (ANN_PATH, None)])
    for name in ("train2017", "val2017", ANN):
        assert name in res.stdout


def test_keep_zips(tmp_path, server):
    res = run(tmp_path, "--keep-zips", "--splits", "val2017", base_url=server.url)
    assert_ok(res)
    assert_images(tmp_path, "val2017")
    assert_annotations(tmp_path)
    assert (tmp_path / "downloads" / "val2017.zip").read_bytes() == ZIPS[VAL]
    assert (tmp_path / "downloads" / f"{ANN}.zip").read_bytes() == ZIPS[ANN_PATH]
    assert not (tmp_path / "images" / "train2017").exists()
    assert TRAIN not in [p for p, _ in gets(server)]


def test_splits_subset_and_duplicates(tmp_path, server):
    res = run(tmp_path, "--splits", "test2017,test2017", base_url=server.url)
    assert_ok(res)
    assert_images(tmp_path, "test2017")
    assert sorted(gets(server)) == sorted([("/zips/test2017.zip", None), (ANN_PATH, None)])


def test_resume_after_interrupted_transfer(tmp_path, server):
    data = ZIPS[TRAIN]
    half = len(data) // 2
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "train2017.zip.part").write_bytes(data[:half])
    res = run(tmp_path, "--splits", "train2017", base_url=server.url)
    assert_ok(res)
    train_gets = [rng for path, rng in gets(server) if path == TRAIN]
    assert train_gets == [f"bytes={half}-"], train_gets
    assert "resuming" in res.stdout
    assert_images(tmp_path, "train2017")
    assert leftovers(tmp_path) == []


def test_transfer_that_breaks_off_is_resumed(tmp_path, server):
    data = ZIPS[TRAIN]
    server.truncate_once.add(TRAIN)
    res = run(tmp_path, "--splits", "train2017", base_url=server.url)
    assert_ok(res)
    train_gets = [rng for path, rng in gets(server) if path == TRAIN]
    assert train_gets == [None, f"bytes={len(data) // 2}-"], train_gets
    assert "broke off" in res.stderr
    assert_images(tmp_path, "train2017")


def test_complete_part_file_is_not_downloaded_again(tmp_path, server):
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "train2017.zip.part").write_bytes(ZIPS[TRAIN])
    res = run(tmp_path, "--splits", "train2017", base_url=server.url)
    assert_ok(res)
    assert TRAIN not in [p for p, _ in gets(server)]
    assert_images(tmp_path, "train2017")


def test_server_without_range_support_restarts_download(tmp_path, server):
    server.ignore_range = True
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "train2017.zip.part").write_bytes(ZIPS[TRAIN][:1000])
    res = run(tmp_path, "--splits", "train2017", base_url=server.url)
    assert_ok(res)
    assert [rng for path, rng in gets(server) if path == TRAIN] == ["bytes=1000-", None]
    assert "cannot resume" in res.stderr
    assert_images(tmp_path, "train2017")


def test_rejected_resume_offset_restarts_download(tmp_path, server):
    # Without a size from HEAD the script cannot tell that the .part file is
    # complete; the server answers 416 and the script starts over.
    server.head_length[TRAIN] = None
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "train2017.zip.part").write_bytes(ZIPS[TRAIN])
    res = run(tmp_path, "--splits", "train2017", base_url=server.url)
    assert_ok(res)
    n = len(ZIPS[TRAIN])
    assert [rng for path, rng in gets(server) if path == TRAIN] == [f"bytes={n}-", None]
    assert_images(tmp_path, "train2017")


def test_corrupt_archive_is_rejected_and_refetched_next_run(tmp_path, server):
    server.files[TRAIN] = corrupted(ZIPS[TRAIN])
    assert len(server.files[TRAIN]) == len(ZIPS[TRAIN])
    res = run(tmp_path, "--splits", "train2017", base_url=server.url)
    assert res.returncode != 0
    assert "downloads/train2017.zip" in res.stderr
    assert "corrupt" in res.stderr
    assert "download it again" in res.stderr
    assert not (tmp_path / "images" / "train2017").exists()
    assert not (tmp_path / "images" / ".train2017.complete").exists()
    assert not (tmp_path / "images" / ".train2017.tmp").exists()
    assert not (tmp_path / "downloads" / "train2017.zip").exists()
    assert (tmp_path / "downloads" / "train2017.zip.corrupt").exists()

    # Once the server has the right file, a re-run downloads it from scratch.
    server.files[TRAIN] = ZIPS[TRAIN]
    server.clear()
    res = run(tmp_path, "--splits", "train2017", base_url=server.url)
    assert_ok(res)
    assert [rng for path, rng in gets(server) if path == TRAIN] == [None]
    assert_images(tmp_path, "train2017")


def test_size_mismatch_is_reported_as_corrupt(tmp_path, server):
    server.head_length[VAL] = len(ZIPS[VAL]) + 100
    res = run(tmp_path, "--splits", "val2017", base_url=server.url)
    assert res.returncode != 0
    assert "downloads/val2017.zip" in res.stderr and "corrupt" in res.stderr
    assert "size" in res.stderr
    assert not (tmp_path / "images" / "val2017").exists()
    assert not (tmp_path / "images" / ".val2017.complete").exists()


def test_server_without_content_length_skips_size_check(tmp_path, server):
    server.head_length[ANN_PATH] = None
    res = run(tmp_path, "--annotations-only", base_url=server.url)
    assert_ok(res)
    assert "no size" in res.stdout
    assert_annotations(tmp_path)


def test_rerun_is_idempotent_and_offline(tmp_path, server, path_without):
    assert_ok(run(tmp_path, base_url=server.url))
    server.clear()
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    # curl removed from PATH: proof that nothing is downloaded, not even a HEAD.
    res = run(tmp_path, base_url=server.url, path=path_without("curl"))
    assert_ok(res)
    assert server.log() == []
    for name in ("train2017", "val2017", ANN):
        assert re.search(rf"{name}: already present.*skipping", res.stdout), res.stdout
    assert "Nothing to do" in res.stdout
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def test_interrupted_extraction_is_cleaned_up(tmp_path, server):
    # What a killed run may leave: a half-filled temp dir, and a folder that
    # never got its completion marker.
    (tmp_path / "images" / ".train2017.tmp" / "train2017").mkdir(parents=True)
    (tmp_path / "images" / ".train2017.tmp" / "train2017" / "junk.jpg").write_bytes(b"x")
    (tmp_path / "images" / "train2017").mkdir()
    (tmp_path / "images" / "train2017" / "stale.jpg").write_bytes(b"x")
    res = run(tmp_path, "--splits", "train2017", base_url=server.url)
    assert_ok(res)
    assert_images(tmp_path, "train2017")  # exactly the archive's files
    assert leftovers(tmp_path) == []


def test_annotations_only(tmp_path, server):
    res = run(tmp_path, "--annotations-only", base_url=server.url)
    assert_ok(res)
    assert_annotations(tmp_path)
    assert gets(server) == [(ANN_PATH, None)]
    assert not (tmp_path / "images").exists()


def test_without_unzip_python_is_used(tmp_path, server, path_without):
    res = run(tmp_path, "--splits", "val2017", base_url=server.url, path=path_without("unzip"))
    assert_ok(res)
    assert "unzip not found" in res.stderr
    assert_images(tmp_path, "val2017")
    assert_annotations(tmp_path)


def test_without_unzip_python_detects_corruption(tmp_path, server, path_without):
    server.files[VAL] = corrupted(ZIPS[VAL])
    res = run(tmp_path, "--splits", "val2017", base_url=server.url, path=path_without("unzip"))
    assert res.returncode != 0
    assert "downloads/val2017.zip" in res.stderr and "corrupt" in res.stderr
    assert not (tmp_path / "images" / "val2017").exists()


def test_missing_curl_is_a_clear_error(tmp_path, server, path_without):
    res = run(tmp_path, base_url=server.url, path=path_without("curl"))
    assert res.returncode == 1
    assert "curl" in res.stderr and "not found" in res.stderr
    assert server.log() == []


def test_missing_file_on_server_fails(tmp_path, server):
    del server.files[VAL]
    res = run(tmp_path, "--splits", "val2017", base_url=server.url)
    assert res.returncode == 1
    assert "404" in res.stderr
    assert not (tmp_path / "images" / "val2017").exists()


@pytest.mark.parametrize("args", [
    ["--bogus"],
    ["--splits", "train2018"],
    ["--splits", "train2017,,val2017"],
    ["--splits", ""],
    ["--splits"],
    ["--base-url", "not a url"],
    ["extra-argument"],
])
def test_usage_errors_exit_2_with_one_line(tmp_path, server, args):
    res = run(tmp_path, *args, base_url=server.url)
    assert res.returncode == 2, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "see --help" in lines[0]
    assert res.stdout == ""
    assert server.log() == []
    assert list(tmp_path.iterdir()) == []


def test_help_mentions_every_flag(tmp_path):
    for flag in ("-h", "--help"):
        res = subprocess.run([str(SCRIPT), flag], capture_output=True, text=True, timeout=30)
        assert res.returncode == 0
        assert res.stderr == ""
        for opt in ("--root", "--splits", "--annotations-only", "--base-url",
                    "--keep-zips", "-h", "--help", "train2017", "val2017", "test2017",
                    "http://images.cocodataset.org"):
            assert opt in res.stdout, opt
