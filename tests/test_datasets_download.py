"""download.py against a local HTTP server on 127.0.0.1 (no internet): success, cache stamp, wrong md5,
truncation, redirect, HTML answers, refused connection, resume, and the atomic .npz cache."""
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from minicct.io import download as dl
from minicct.io.download import DownloadError, RemoteFile

PAYLOAD = np.random.default_rng(0).integers(0, 256, size=2_500_000, dtype=np.uint8).tobytes()
MD5 = hashlib.md5(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Routes: /file.bin (Range only if server.range_ok), /moved (301), /html, /html-sniff, /truncated
    (announces all bytes, sends half), /short-nolength (half, no Content-Length), /missing (404)."""

    def log_message(self, *args):
        pass

    def _send(self, status, body, ctype="application/octet-stream", length=None, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if length is not False:
            self.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        srv = self.server
        srv.log.append((self.path, self.headers.get("Range")))
        if self.path == "/file.bin":
            rng = self.headers.get("Range")
            if rng and srv.range_ok:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(PAYLOAD):
                    return self._send(416, b"")
                return self._send(206, PAYLOAD[start:],
                                  extra=[("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")])
            return self._send(200, PAYLOAD)
        if self.path == "/moved":
            return self._send(301, b"", extra=[("Location", "/file.bin")])
        if self.path == "/html":
            return self._send(200, b"Moved: please log in", ctype="text/html; charset=utf-8")
        if self.path == "/html-sniff":
            return self._send(200, b"  <!DOCTYPE html><html>login</html>")
        if self.path == "/truncated":
            return self._send(200, PAYLOAD[: len(PAYLOAD) // 2], length=len(PAYLOAD))
        if self.path == "/short-nolength":
            return self._send(200, PAYLOAD[: len(PAYLOAD) // 2], length=False)
        return self._send(404, b"not found", ctype="text/plain")


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client that hangs up early (the tests' interrupted downloads) is expected: print nothing."""


@pytest.fixture
def server():
    srv = _QuietServer(("127.0.0.1", 0), _Handler)
    srv.log, srv.range_ok = [], True
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def _refused_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/file.bin"


def _no_files(path: Path):
    return not path.exists() and not path.with_name(path.name + ".part").exists()


def test_download_success_writes_file_and_stamp(server, tmp_path):
    path = tmp_path / "sub" / "file.bin"
    out = dl.download(server.url + "/file.bin", path, MD5, size=len(PAYLOAD), progress=False)
    assert out == path and path.read_bytes() == PAYLOAD
    assert not path.with_name("file.bin.part").exists()
    assert dl.is_verified(path, MD5, len(PAYLOAD))
    assert path.with_name("file.bin.md5ok").is_file()


def test_cached_file_is_used_without_network_or_rehash(server, tmp_path, monkeypatch):
    path = tmp_path / "file.bin"
    dl.download(server.url + "/file.bin", path, MD5, progress=False)
    monkeypatch.setattr(dl, "file_md5", lambda p: pytest.fail("a stamped file must not be re-hashed"))
    assert dl.download(_refused_url(), path, MD5, progress=False) == path
    assert len(server.log) == 1


def test_cached_file_without_stamp_is_hashed_once(tmp_path, monkeypatch):
    path = tmp_path / "file.bin"
    path.write_bytes(PAYLOAD)  # put there by hand
    assert dl.download(_refused_url(), path, MD5, progress=False) == path
    monkeypatch.setattr(dl, "file_md5", lambda p: pytest.fail("second check must use the stamp"))
    assert dl.is_verified(path, MD5)


def test_changed_file_is_rehashed_and_replaced(server, tmp_path):
    path = tmp_path / "file.bin"
    dl.download(server.url + "/file.bin", path, MD5, progress=False)
    path.write_bytes(b"x" * len(PAYLOAD))  # same size, new mtime: the stamp no longer applies
    assert not dl.is_verified(path, MD5)
    dl.download(server.url + "/file.bin", path, MD5, progress=False)
    assert path.read_bytes() == PAYLOAD and len(server.log) == 2


def test_wrong_md5_rejected_and_nothing_left(server, tmp_path):
    path = tmp_path / "file.bin"
    wrong = "0" * 32
    with pytest.raises(DownloadError) as err:
        dl.download(server.url + "/file.bin", path, wrong, progress=False)
    assert MD5 in str(err.value) and wrong in str(err.value) and str(path.resolve()) in str(err.value)
    assert _no_files(path)


@pytest.mark.parametrize("route, size", [("/truncated", None), ("/short-nolength", len(PAYLOAD))])
def test_truncated_download_rejected_after_retries(server, tmp_path, route, size):
    path = tmp_path / "file.bin"
    with pytest.raises(DownloadError, match="truncated"):
        dl.download(server.url + route, path, MD5, size=size, progress=False, retries=2)
    assert _no_files(path)
    assert len(server.log) == 3  # one attempt + 2 retries, each made progress


def test_announced_size_mismatch_rejected(server, tmp_path):
    path = tmp_path / "file.bin"
    with pytest.raises(DownloadError, match="announces"):
        dl.download(server.url + "/file.bin", path, MD5, size=len(PAYLOAD) + 1, progress=False)
    assert _no_files(path)


def test_redirect_followed_and_final_url_recorded(server, tmp_path):
    path = tmp_path / "file.bin"
    dl.download(server.url + "/moved", path, MD5, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert [p for p, _ in server.log] == ["/moved", "/file.bin"]
    assert server.url + "/file.bin" in path.with_name("file.bin.md5ok").read_text()


@pytest.mark.parametrize("route", ["/html", "/html-sniff"])
def test_html_answer_rejected(server, tmp_path, route):
    path = tmp_path / "file.bin"
    with pytest.raises(DownloadError, match="HTML"):
        dl.download(server.url + route, path, MD5, progress=False)
    assert _no_files(path)


def test_http_error_status(server, tmp_path):
    with pytest.raises(DownloadError, match="404"):
        dl.download(server.url + "/missing", tmp_path / "f", MD5, progress=False)


def test_connection_refused_names_url_md5_and_path(tmp_path):
    url, path = _refused_url(), tmp_path / "file.bin"
    with pytest.raises(DownloadError) as err:
        dl.download(url, path, MD5, size=len(PAYLOAD), progress=False)
    msg = str(err.value)
    assert isinstance(err.value, RuntimeError)
    assert url in msg and MD5 in msg and str(path.resolve()) in msg and str(len(PAYLOAD)) in msg
    assert _no_files(path)


def test_existing_wrong_file_kept_when_download_fails(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")
    with pytest.raises(DownloadError, match="does not have md5"):
        dl.download(_refused_url(), path, MD5, progress=False)
    assert path.read_bytes() == b"old"


def test_interrupted_download_resumes_with_range(server, tmp_path, monkeypatch):
    path = tmp_path / "file.bin"
    part = path.with_name("file.bin.part")

    def interrupt(self, n, force=False):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(dl._Progress, "update", interrupt)
        with pytest.raises(KeyboardInterrupt):
            dl.download(server.url + "/file.bin", path, MD5, progress=False)
    have = part.stat().st_size
    assert 0 < have < len(PAYLOAD) and not path.exists()  # Ctrl-C keeps the .part
    dl.download(server.url + "/file.bin", path, MD5, progress=False)
    assert server.log[-1] == ("/file.bin", f"bytes={have}-")
    assert path.read_bytes() == PAYLOAD and not part.exists()


def test_resume_restarts_when_range_ignored(server, tmp_path):
    server.range_ok = False
    path = tmp_path / "file.bin"
    path.with_name("file.bin.part").write_bytes(b"garbage that is not a prefix")
    dl.download(server.url + "/file.bin", path, MD5, progress=False)
    assert server.log[-1][1] is not None  # Range was asked, 200 came, download restarted at 0
    assert path.read_bytes() == PAYLOAD


def test_progress_single_updating_line(server, tmp_path, capsys):
    dl.download(server.url + "/file.bin", tmp_path / "file.bin", MD5, size=len(PAYLOAD), progress=True)
    err = capsys.readouterr().err
    last = err.rstrip("\n").split("\r")[-1]
    assert "100.0%" in last and "MB/s" in last and "ETA" in last and "2.5/2.5 MB" in last
    assert err.count("\n") == 2  # "downloading ..." line, then the one progress line


def test_invalid_md5_argument(tmp_path):
    with pytest.raises(ValueError, match="md5"):
        dl.download("http://127.0.0.1/x", tmp_path / "x", "not-an-md5")


def test_fetch_without_download_raises_with_hint(tmp_path):
    remote = RemoteFile("http://example.invalid/a.bin", "a.bin", MD5, len(PAYLOAD))
    with pytest.raises(FileNotFoundError) as err:
        dl.fetch(remote, tmp_path, allow_download=False)
    assert remote.url in str(err.value) and str((tmp_path / "a.bin").resolve()) in str(err.value)
    (tmp_path / "a.bin").write_bytes(PAYLOAD)
    assert dl.fetch(remote, tmp_path, allow_download=False) == tmp_path / "a.bin"


def test_npz_cache_roundtrip_source_check_and_corruption(tmp_path):
    path = tmp_path / "c.npz"
    x = np.arange(12, dtype=np.uint8).reshape(3, 4)
    dl.atomic_savez(path, source=np.array("abc"), x=x, names=np.array(["a", "b"]))
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left
    got = dl.load_npz_cache(path, "abc")
    assert np.array_equal(got["x"], x) and got["names"].tolist() == ["a", "b"] and "source" not in got
    assert dl.load_npz_cache(path, "other") is None
    path.write_bytes(b"not a zip")
    assert dl.load_npz_cache(path, "abc") is None
    assert dl.load_npz_cache(tmp_path / "absent.npz", "abc") is None
