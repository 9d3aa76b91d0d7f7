"""Tests for features/data/download.py against a throwaway HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pooch
import pytest
from PIL import Image

# The repo is not an installed package; make `features` importable however pytest
# is invoked (imported via importlib so no import sits below executable code).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
dl = importlib.import_module("features.data.download")

# --------------------------------------------------------------------------- #
# Local HTTP server with Range support and a "cut the connection" switch
# --------------------------------------------------------------------------- #


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        state = self.server.state
        range_header = self.headers.get("Range")
        state.requests.append({"path": self.path, "range": range_header})
        path = state.root / self.path.split("?", 1)[0].lstrip("/")
        if not path.is_file():
            state.statuses.append(404)
            self.send_error(404)
            return
        data = path.read_bytes()
        start, status = 0, 200
        if range_header and not state.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", range_header).group(1))
            if start >= len(data):
                state.statuses.append(416)
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        state.statuses.append(status)
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if state.cut_after is not None:
            # One-shot: send part of the body, then drop the connection.
            cut, state.cut_after = state.cut_after, None
            self.wfile.write(body[:cut])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class _Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        self.cut_after: int | None = None
        self.ignore_range = False
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.state = self
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def put(self, name: str, data: bytes) -> str:
        (self.root / name).write_bytes(data)
        return self.url(name)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # A proxy configured for package registries must not intercept 127.0.0.1.
    for var in (
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    srv = _Server(root)
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _payload(size: int = 50_000, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


# --------------------------------------------------------------------------- #
# download_file
# --------------------------------------------------------------------------- #


def test_full_download_verifies_and_lands_atomically(server, tmp_path, monkeypatch):
    data = _payload()
    url = server.put("blob.bin", data)
    out_dir = tmp_path / "out"
    seen_at_move = []
    real_move = shutil.move

    def spy_move(src, dst):
        # pooch moves its verified temp file beside the target onto the final name.
        seen_at_move.append((Path(dst).exists(), Path(src).parent == out_dir, Path(src).read_bytes() == data))
        return real_move(src, dst)

    monkeypatch.setattr(pooch.core.shutil, "move", spy_move)
    result = dl.download_file(url, out_dir / "blob.bin", expected=("sha256", _sha256(data)), progress=False)
    monkeypatch.undo()

    assert result == out_dir / "blob.bin"
    assert result.read_bytes() == data
    assert sorted(p.name for p in out_dir.iterdir()) == ["blob.bin"]
    assert seen_at_move == [(False, True, True)]
    # pooch's temp file is 0600; the download gets the mode any new file gets.
    assert result.stat().st_mode & 0o777 == 0o666 & ~_umask()

    # An existing verified file is not downloaded again.
    n_requests = len(server.requests)
    dl.download_file(url, out_dir / "blob.bin", expected=("sha256", _sha256(data)), progress=False)
    assert len(server.requests) == n_requests


def test_cut_connection_is_retried_from_zero(server, tmp_path):
    data = _payload(60_000, seed=1)
    url = server.put("blob.bin", data)
    server.cut_after = 21_000

    out = dl.download_file(url, tmp_path / "blob.bin", expected=("sha256", _sha256(data)), progress=False, retries=1)

    # No resume: the retry asks for the whole file again.
    assert [r["range"] for r in server.requests] == [None, None]
    assert out.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.bin", "srv"]


def test_cut_connection_without_retries_fails_and_keeps_nothing(server, tmp_path):
    data = _payload(60_000, seed=1)
    url = server.put("blob.bin", data)
    server.cut_after = 21_000
    out_dir = tmp_path / "out"

    with pytest.raises(dl.DownloadError) as excinfo:
        dl.download_file(url, out_dir / "blob.bin", expected=("sha256", _sha256(data)), progress=False, retries=0)

    message = str(excinfo.value)
    assert url in message and "run the same command again" in message and "--data" in message
    assert list(out_dir.iterdir()) == []


def test_checksum_mismatch_is_retried_then_raises_and_leaves_no_file(server, tmp_path):
    data = _payload(8_000, seed=4)
    url = server.put("blob.bin", data)
    wrong = "0" * 64

    with pytest.raises(dl.ChecksumMismatchError) as excinfo:
        dl.download_file(url, tmp_path / "out" / "blob.bin", expected=("sha256", wrong), progress=False, retries=1)

    assert wrong in str(excinfo.value) and _sha256(data) in str(excinfo.value)
    assert len(server.requests) == 2
    assert list((tmp_path / "out").iterdir()) == []


def test_existing_final_file_that_fails_verification_is_reported_not_replaced(server, tmp_path):
    data = _payload(5_000, seed=5)
    url = server.put("blob.bin", data)
    final = tmp_path / "blob.bin"
    final.write_bytes(b"someone else's file")

    with pytest.raises(dl.ChecksumMismatchError, match="Delete it"):
        dl.download_file(url, final, expected=("sha256", _sha256(data)), progress=False)

    assert final.read_bytes() == b"someone else's file"
    assert server.requests == []


def test_bad_expected_checksum_is_refused_before_any_request(server, tmp_path):
    url = server.put("blob.bin", b"x")
    with pytest.raises(ValueError, match="hex digest"):
        dl.download_file(url, tmp_path / "blob.bin", expected=("sha256", "abc"), progress=False)
    assert server.requests == []


def test_network_failure_message_explains_retry_and_offline(tmp_path):
    # A port that was just free on 127.0.0.1: the connection is refused.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(dl.DownloadError) as excinfo:
        dl.download_file(f"http://127.0.0.1:{port}/x.zip", tmp_path / "x.zip", progress=False, timeout=5, retries=0)
    message = str(excinfo.value)
    assert f"127.0.0.1:{port}" in message
    assert "run the same command again" in message and "--data" in message
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- #
# safe_extract
# --------------------------------------------------------------------------- #


@pytest.fixture
def refuse_before_writing(monkeypatch):
    """Fail the test if safe_extract gets as far as creating its temporary folder."""

    def forbidden(*args, **kwargs):
        raise AssertionError("safe_extract started writing before refusing the archive")

    monkeypatch.setattr(dl, "atomic_folder", forbidden)


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return buf.getvalue()


@pytest.mark.parametrize("evil", ["../evil.txt", "ok/../../evil.txt", "ABSOLUTE"])
def test_zip_with_escaping_member_is_refused(tmp_path, evil, refuse_before_writing):
    work = tmp_path / "work"
    work.mkdir()
    outside = tmp_path / "evil.txt"
    name = str(outside) if evil == "ABSOLUTE" else evil
    archive = work / "bad.zip"
    archive.write_bytes(_zip_bytes({"good/a.txt": b"fine", name: b"pwned"}))

    with pytest.raises(dl.UnsafeArchiveError):
        dl.safe_extract(archive, work / "target")

    assert not outside.exists()
    assert not (work / "target").exists()
    # No temporary extraction folder either: refused before anything was written.
    assert sorted(p.name for p in work.iterdir()) == ["bad.zip"]


def _tar_with_symlink(path: Path, linkname: str) -> None:
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("data/link")
        info.type = tarfile.SYMTYPE
        info.linkname = linkname
        tf.addfile(info)
        payload = b"hello"
        info = tarfile.TarInfo("data/file.txt")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))


@pytest.mark.parametrize("linkname", ["../../outside", "/etc/passwd"])
def test_tar_symlink_pointing_outside_is_refused(tmp_path, linkname, refuse_before_writing):
    archive = tmp_path / "bad.tar"
    _tar_with_symlink(archive, linkname)
    with pytest.raises(dl.UnsafeArchiveError):
        dl.safe_extract(archive, tmp_path / "target")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar"]


def test_tar_symlink_chain_escaping_the_target_is_refused(tmp_path):
    # Each link looks harmless on its own; together "a" resolves to the parent.
    archive = tmp_path / "work" / "chain.tar"
    archive.parent.mkdir()
    with tarfile.open(archive, "w") as tf:
        for name, linkname in (("b", "."), ("a", "b/..")):
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = linkname
            tf.addfile(info)
    with pytest.raises(dl.UnsafeArchiveError):
        dl.safe_extract(archive, tmp_path / "work" / "target")
    assert sorted(p.name for p in archive.parent.iterdir()) == ["chain.tar"]


def test_tar_symlink_even_inside_target_is_refused(tmp_path, refuse_before_writing):
    # Links in tars are refused outright (Python 3.11's data filter has symlink bypasses).
    archive = tmp_path / "ok.tar"
    _tar_with_symlink(archive, "file.txt")
    with pytest.raises(dl.UnsafeArchiveError, match="links"):
        dl.safe_extract(archive, tmp_path / "target")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.tar"]


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def test_tar_with_escaping_member_is_refused(tmp_path, refuse_before_writing):
    archive = tmp_path / "work" / "bad.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(_tar_bytes({"top/a.txt": b"fine", "top/../../evil.txt": b"pwned"}))
    with pytest.raises(dl.UnsafeArchiveError):
        dl.safe_extract(archive, tmp_path / "work" / "target")
    assert not (tmp_path / "evil.txt").exists()
    assert sorted(p.name for p in archive.parent.iterdir()) == ["bad.tar.gz"]


def test_tar_subdir_becomes_the_target(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar_bytes({"top/x/a.txt": b"a", "other/b.txt": b"b", "__MACOSX/top/._a": b"junk"}))
    out = dl.safe_extract(archive, tmp_path / "out", subdir="top")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [dl.MARKER_NAME, "x/a.txt"]
    assert (out / "x" / "a.txt").read_bytes() == b"a"


def test_archive_without_the_subdir_is_refused(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_bytes({"elsewhere/x.txt": b"x"}))
    with pytest.raises(ValueError, match="no top-level folder 'top'"):
        dl.safe_extract(archive, tmp_path / "out", subdir="top")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip"]


def test_temp_folder_left_by_a_killed_run_is_removed(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_bytes({"x.txt": b"x"}))
    stale = tmp_path / ".out.abc123.tmp"
    (stale / "half").mkdir(parents=True)
    dl.safe_extract(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "out"]


def test_extraction_is_atomic_and_rerun_skips(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_bytes({"top/x.txt": b"x", "__MACOSX/top/._x.txt": b"junk"}))

    def failing_validate(root):
        raise ValueError("simulated failure half-way")

    with pytest.raises(ValueError, match="half-way"):
        dl.safe_extract(archive, tmp_path / "out", validate=failing_validate)
    # An interrupted extraction leaves neither the target nor a temp folder behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip"]

    out = dl.safe_extract(archive, tmp_path / "out")
    assert (out / "top" / "x.txt").read_bytes() == b"x"
    assert not (out / "__MACOSX").exists()
    assert (out / dl.MARKER_NAME).is_file()

    archive.unlink()  # The marker alone must be enough for a rerun.
    assert dl.safe_extract(archive, tmp_path / "out") == out


def test_existing_folder_without_marker_is_not_overwritten(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_bytes({"x.txt": b"x"}))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError):
        dl.safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "mine.txt").read_text() == "user data"


# --------------------------------------------------------------------------- #
# download_dataset / registry / CLI
# --------------------------------------------------------------------------- #

_KERMANY_FILES = {
    f"chest_xray/{split}/{cls}/{cls.lower()}-{i}.jpeg": f"{split}{cls}{i}".encode()
    for split, n in (("train", 3), ("val", 1), ("test", 2))
    for cls in ("NORMAL", "PNEUMONIA")
    for i in range(n)
}


def _fake_kermany_zip() -> bytes:
    members = dict(_KERMANY_FILES)
    members["__MACOSX/chest_xray/train/NORMAL/._normal-0.jpeg"] = b"apple double"
    return _zip_bytes(members)


def test_kermany_download_ends_in_expected_layout(server, tmp_path):
    blob = _fake_kermany_zip()
    url = server.put("ChestXRay2017.zip", blob)
    dest = tmp_path / "data"

    data_dir = dl.download_dataset("kermany", dest, url=url, sha256=_sha256(blob), progress=False)

    assert data_dir == dest.resolve() / "chest_xray"
    files = {
        p.relative_to(dest.resolve()).as_posix(): p.read_bytes()
        for p in data_dir.rglob("*")
        if p.is_file() and p.name != dl.MARKER_NAME
    }
    assert files == _KERMANY_FILES
    assert not any("__MACOSX" in p.as_posix() for p in dest.rglob("*"))
    assert json.loads((dest / ".checksums.json").read_text())["ChestXRay2017.zip"]["sha256"] == _sha256(blob)

    # Second run: marker present, no network access at all.
    n_requests = len(server.requests)
    assert dl.download_dataset("kermany", dest, url=url, progress=False) == data_dir
    assert len(server.requests) == n_requests


def test_kermany_without_val_split_warns(server, tmp_path, capsys):
    members = {k: v for k, v in _KERMANY_FILES.items() if "/val/" not in k}
    blob = _zip_bytes(members)
    url = server.put("ChestXRay2017.zip", blob)
    data_dir = dl.download_dataset("kermany", tmp_path / "d", url=url, sha256=_sha256(blob), progress=False)
    assert sorted(p.name for p in data_dir.iterdir() if p.is_dir()) == ["test", "train"]
    assert "no val/ split" in capsys.readouterr().out


def _fake_npz(labels_by_split: dict[str, list[int]]) -> bytes:
    rng = np.random.default_rng(7)
    arrays = {}
    for split, labels in labels_by_split.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.array(labels, dtype=np.uint8).reshape(-1, 1)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


_NPZ_LABELS = {"train": [0, 1, 1, 0, 1], "val": [1, 0], "test": [0, 0, 1]}


def test_pneumoniamnist_npz_is_converted_to_png_folders(server, tmp_path):
    blob = _fake_npz(_NPZ_LABELS)
    url = server.put("pneumoniamnist.npz", blob)
    dest = tmp_path / "data"

    data_dir = dl.download_dataset("pneumoniamnist", dest, url=url, sha256=_sha256(blob), progress=False)

    assert data_dir == dest.resolve() / "pneumoniamnist"
    with np.load(io.BytesIO(blob)) as arrays:
        for split, labels in _NPZ_LABELS.items():
            for cls, value in (("NORMAL", 0), ("PNEUMONIA", 1)):
                pngs = sorted((data_dir / split / cls).glob("*.png"))
                assert len(pngs) == labels.count(value)
                assert {int(p.stem) for p in pngs} == {i for i, lab in enumerate(labels) if lab == value}
            # Pixels survive the round trip, as 8-bit grayscale, under their row index.
            first_cls = "NORMAL" if labels[0] == 0 else "PNEUMONIA"
            with Image.open(data_dir / split / first_cls / "0.png") as img:
                assert img.mode == "L" and img.size == (28, 28)
                assert np.array_equal(np.asarray(img), arrays[f"{split}_images"][0])


def test_published_checksum_applies_to_mirrors(server, tmp_path):
    blob = _fake_npz(_NPZ_LABELS)
    url = server.put("pneumoniamnist.npz", blob)
    with pytest.raises(dl.ChecksumMismatchError) as excinfo:
        dl.download_dataset("pneumoniamnist", tmp_path / "d", url=url, progress=False, retries=0)
    assert dl.DATASETS["pneumoniamnist"].checksum in str(excinfo.value)
    assert len(server.requests) == 1
    assert not (tmp_path / "d" / "pneumoniamnist.npz").exists()
    assert not (tmp_path / "d" / "pneumoniamnist").exists()


def test_unknown_dataset_lists_valid_names(tmp_path):
    with pytest.raises(ValueError) as excinfo:
        dl.download_dataset("mnist", tmp_path)
    for name in dl.DATASETS:
        assert name in str(excinfo.value)


def test_registry_checksums_are_well_formed():
    for source in dl.DATASETS.values():
        assert source.url.startswith("https://")
        if source.checksum is not None:
            assert len(source.checksum) == dl._HEX_LENGTHS[source.checksum_algo]
    assert dl.DATASETS["kermany"].checksum is None  # none published: trust on first use


def test_trust_on_first_use_records_then_detects_a_changed_file(server, tmp_path, capsys):
    blob = _fake_kermany_zip()
    url = server.put("ChestXRay2017.zip", blob)
    dest = tmp_path / "data"

    dl.download_dataset("kermany", dest, url=url, progress=False)

    record = json.loads((dest / ".checksums.json").read_text())["ChestXRay2017.zip"]
    assert record["sha256"] == _sha256(blob)
    out = capsys.readouterr().out
    assert "NOT PUBLISHED" in out and _sha256(blob) in out

    # Same name, different bytes upstream; force a fresh download.
    tampered = _zip_bytes({**_KERMANY_FILES, "chest_xray/train/NORMAL/extra.jpeg": b"new"})
    server.put("ChestXRay2017.zip", tampered)
    (dest / "ChestXRay2017.zip").unlink()
    shutil.rmtree(dest / "chest_xray")

    with pytest.raises(dl.ChecksumMismatchError) as excinfo:
        dl.download_dataset("kermany", dest, url=url, progress=False, retries=0)
    assert _sha256(blob) in str(excinfo.value) and _sha256(tampered) in str(excinfo.value)
    assert not (dest / "ChestXRay2017.zip").exists()
    assert not (dest / "chest_xray").exists()


def test_trust_on_first_use_does_not_record_a_file_that_is_not_an_archive(server, tmp_path):
    url = server.put("ChestXRay2017.zip", b"<html>Please log in</html>")
    dest = tmp_path / "data"
    with pytest.raises(ValueError, match="neither a zip nor a tar"):
        dl.download_dataset("kermany", dest, url=url, progress=False)
    assert not (dest / ".checksums.json").exists()
    assert not (dest / "chest_xray").exists()


def test_cli_prints_benchmark_command_and_citation(server, tmp_path, capsys):
    blob = _fake_npz(_NPZ_LABELS)
    url = server.put("pneumoniamnist.npz", blob)
    dest = tmp_path / "data"

    status = dl.main(
        [
            "pneumoniamnist",
            "--dest",
            str(dest),
            "--url",
            url,
            "--sha256",
            _sha256(blob),
            "--no-progress",
        ]
    )

    out = capsys.readouterr().out
    assert status == 0
    # The 28 px images are below every backbone's minimum input, so the command says to keep them.
    assert f"python run_benchmark.py --data {dest.resolve() / 'pneumoniamnist'} --min-image-side 0" in out
    assert "doi:10.1038/s41597-022-01721-8" in out and "CC BY 4.0" in out


def test_cli_unknown_name_fails_with_list(tmp_path, capsys):
    assert dl.main(["nope", "--dest", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "kermany" in err and "pneumoniamnist" in err


def test_module_help_runs_as_a_script():
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "features.data.download", "--help"],
        check=False,
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    for name in dl.DATASETS:
        assert name in result.stdout
    assert "--sha256" in result.stdout and "NOT published" in result.stdout
