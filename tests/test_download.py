"""The UCF-101 download path, offline: a local HTTP server on 127.0.0.1 serves a small RAR
(built here); the first response breaks off halfway to test resume."""
from __future__ import annotations

import os
import shutil
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from actionrec.download import download, main
from actionrec.errors import UserError
from actionrec.ucf101 import scan_dataset
from tests.conftest import tiny_video


def rar4_stored(files: dict[str, bytes]) -> bytes:
    """A RAR 4 archive with uncompressed ("stored") entries: no free tool writes RAR, and the
    format of stored entries is a few fixed headers (RAR technote, RAR 2.9/4.x)."""
    def block(head_type: int, flags: int, body: bytes) -> bytes:
        header = struct.pack("<BHH", head_type, flags, 7 + len(body)) + body
        return struct.pack("<H", zlib.crc32(header) & 0xFFFF) + header

    out = b"Rar!\x1a\x07\x00" + block(0x73, 0, b"\x00" * 6)
    for name, data in files.items():
        encoded = name.replace("/", "\\").encode()
        body = struct.pack("<IIBIIBBHI", len(data), len(data), 0, zlib.crc32(data), 0x5A210000,
                           20, 0x30, len(encoded), 0x20) + encoded
        out += block(0x74, 0x8000, body) + data
    return out + block(0x7B, 0x4000, b"")


class Server:
    """Serves files from a dict with HTTP Range; can break off the first GET of a file."""

    def __init__(self, files: dict[str, bytes], break_first: set[str]):
        self.files, self.break_first, self.requests = files, set(break_first), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[1]
                outer.requests.append((name, self.headers.get("Range")))
                data = outer.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
                if start >= len(data):
                    self.send_error(416)
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if name in outer.break_first:  # send half, then drop the connection
                    outer.break_first.discard(name)
                    self.wfile.write(data[start:len(data) // 2])
                    self.wfile.flush()
                    self.connection.close()
                    return
                self.wfile.write(data[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ucf101"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def archives(tmp_path):
    clip = tiny_video(tmp_path / "clip.avi", frames=6).read_bytes()
    rar = rar4_stored({"UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi": clip,
                       "UCF-101/HandstandPushups/v_HandStandPushups_g01_c01.avi": clip})
    return {"UCF101.rar": rar}


def needs_unar():
    if not shutil.which("unar"):
        assert os.environ.get("CI") != "true", "unar is missing: `make test` installs it (Debian package)"
        pytest.skip("unar is missing (make test installs it where it can: root on Debian/Ubuntu)")


def test_download_resumes_checks_and_extracts(tmp_path, archives, capsys):
    needs_unar()
    server = Server(archives, break_first={"UCF101.rar"})
    dest = tmp_path / "data"
    try:
        with pytest.raises(UserError, match="run again to resume"):  # the first try breaks off halfway
            main(["--dest", str(dest), "--base-url", server.url])
        part = dest / "UCF101.rar.part"
        assert part.stat().st_size == len(archives["UCF101.rar"]) // 2
        main(["--dest", str(dest), "--base-url", server.url])  # resumes
    finally:
        server.close()
    assert ("UCF101.rar", f"bytes={len(archives['UCF101.rar']) // 2}-") in server.requests
    assert (dest / "UCF101.rar").read_bytes() == archives["UCF101.rar"] and not part.exists()
    assert (dest / "UCF101.rar.sha256").read_text().split()[1] == "UCF101.rar"
    clips, rejected = scan_dataset(dest / "UCF-101")
    assert sorted(clips["class_name"]) == ["ApplyEyeMakeup", "HandstandPushups"] and not rejected

    capsys.readouterr()
    server = Server(archives, break_first=set())
    try:  # a complete tree is not extracted again (it may be `dvc add`ed, read-only, 6.5 GB)
        main(["--dest", str(dest), "--base-url", server.url])
    finally:
        server.close()
    assert "already complete" in capsys.readouterr().out
    (dest / "UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi").unlink()  # incomplete: extract again
    server = Server(archives, break_first=set())
    try:
        main(["--dest", str(dest), "--base-url", server.url])
    finally:
        server.close()
    assert (dest / "UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi").exists()


def test_wrong_hash_is_refused_and_removed(tmp_path, archives):
    server = Server(archives, break_first=set())
    try:
        with pytest.raises(UserError, match="SHA-256"):
            download(f"{server.url}/UCF101.rar", tmp_path / "UCF101.rar", sha256="0" * 64)
    finally:
        server.close()
    assert not (tmp_path / "UCF101.rar").exists() and not (tmp_path / "UCF101.rar.part").exists()


def test_unreachable_server_is_a_one_line_error(tmp_path):
    server = Server({}, break_first=set())
    url = server.url
    server.close()
    time.sleep(0.1)
    with pytest.raises(UserError, match="cannot reach"):
        download(f"{url}/UCF101.rar", tmp_path / "UCF101.rar", timeout=5)


def test_a_kill_between_rename_and_checksum_leaves_a_working_download(tmp_path, archives, monkeypatch):
    """Killed after the archive is in place but before its .sha256 (or an archive without
    one): the next run computes the hash and extracts, no FileNotFoundError."""
    needs_unar()
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "UCF101.rar").write_bytes(archives["UCF101.rar"])  # no UCF101.rar.sha256 beside it
    main(["--dest", str(dest), "--base-url", "http://127.0.0.1:9/unreachable"])
    assert (dest / "UCF101.rar.sha256").read_text().split()[1] == "UCF101.rar"
    assert sorted(scan_dataset(dest / "UCF-101")[0]["class_name"]) == ["ApplyEyeMakeup", "HandstandPushups"]

    # a fresh download writes the .sha256 before it renames the .part into place
    again = tmp_path / "again"
    again.mkdir()
    renamed, real_replace = [], type(again).replace

    def replace(self, target):
        renamed.append((self.name, (again / "UCF101.rar.sha256").exists()))
        return real_replace(self, target)

    monkeypatch.setattr(type(again), "replace", replace)
    server = Server(archives, break_first=set())
    try:
        download(f"{server.url}/UCF101.rar", again / "UCF101.rar")
    finally:
        server.close()
    assert renamed == [("UCF101.rar.part", True)]


def test_an_archive_the_user_has_is_used_offline(tmp_path, archives):
    needs_unar()
    mine = tmp_path / "downloads/UCF101.rar"
    mine.parent.mkdir()
    mine.write_bytes(archives["UCF101.rar"])
    main(["--dest", str(tmp_path / "data"), "--rar", str(mine), "--base-url", "http://127.0.0.1:9/unreachable"])
    assert sorted(scan_dataset(tmp_path / "data/UCF-101")[0]["class_name"]) == ["ApplyEyeMakeup", "HandstandPushups"]
    with pytest.raises(UserError, match="is not the expected"):
        main(["--dest", str(tmp_path / "data"), "--rar", str(mine), "--sha256", "0" * 64])
