"""Fetch official dataset files: streamed with requests, md5-checked, written atomically, resumable.

The one rule: a file appears under its final name only after its size and md5 matched. Until then the bytes
live in `<name>.part`; a finished download is moved into place with `os.replace`. A verified file gets a
`<name>.md5ok` stamp (md5, size, mtime, ctime, inode) so a 170 MB archive is hashed once, not on every run;
a stamp that does not match the file exactly (written by hand, or left from another file) is not trusted.
The body is read raw (no Content-Encoding decoding); a body of unknown size stops at MAX_UNKNOWN_BYTES.

When the network is not reachable, the error says where to put a file fetched by other means: the loaders use
any file at that path whose md5 matches.

`md5=None` is for files whose checksum nobody publishes (the official CCT weights, minicct/io/pretrained.py): the
download is still streamed, HTML-rejecting and atomic; the caller verifies the content itself.
Setting the environment variable `MINICCT_OFFLINE=1` forbids every download (files already in place are used);
the error then carries the same manual-download instructions. Tests and offline machines use it.

Also here: `atomic_savez` / `load_npz_cache`, the atomic .npz caches the loaders keep beside the archives.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests

from .atomic import atomic_write, atomic_write_text, check_target, commit
from ..datasets.base import data_dir

CHUNK = 1 << 20  # bytes per read and per md5 update
MAX_UNKNOWN_BYTES = 2 << 30  # cap on a download whose size nobody states (no size given, no md5)
_MD5_RE = re.compile(r"^[0-9a-f]{32}$")


class DownloadError(RuntimeError):
    """A download failed, or gave a file that is not the expected one. The message says what to do.

    `reason`: the message without the manual-download instructions (for callers that try several URLs and
    write one set of instructions).
    """

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = message if reason is None else reason


def offline() -> bool:
    """True when the environment variable MINICCT_OFFLINE is set to anything but '' or '0'."""
    return os.environ.get("MINICCT_OFFLINE", "") not in ("", "0")


@dataclass(frozen=True)
class RemoteFile:
    """One official file: where it lives, its name in the cache folder, md5 and size in bytes."""

    url: str
    filename: str
    md5: str
    size: int | None = None


def file_md5(path) -> str:
    """md5 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".md5ok")


def _stat_key(st) -> dict:
    """What identifies the file's bytes as they were when hashed: size, mtime and the inode's change time
    (ctime: set by the kernel on every write, rename or touch, and not settable by hand), inode and device."""
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "ino": st.st_ino,
            "dev": st.st_dev}


def _write_stamp(path: Path, md5: str, url: str | None = None) -> None:
    """Record that `path`, as it is now (size, mtime, ctime, inode), has md5 `md5`. Best effort: a read-only
    folder is fine."""
    info = {"md5": md5, **_stat_key(path.stat())}
    if url:
        info["url"] = url
    try:
        atomic_write_text(_stamp_path(path), json.dumps(info) + "\n")
    except OSError:
        pass


def is_verified(path, md5: str, size: int | None = None) -> bool:
    """True when `path` is a file with this md5 (and size, if given).

    The md5 is computed unless the `.md5ok` stamp beside the file names this md5 and the file's current size,
    mtime, ctime, inode and device. The ctime is set by the kernel on any change to the file (including a copy
    with preserved mtime, or a replacement), so a stamp written by hand or carried over from another file does
    not match and the file is hashed; after a successful check the stamp is (re)written.
    """
    path = Path(path)
    if not path.is_file():
        return False
    st = path.stat()
    if size is not None and st.st_size != size:
        return False
    stamp = _stamp_path(path)
    try:
        info = json.loads(stamp.read_text())
        if isinstance(info, dict) and info.get("md5") == md5 and \
                all(info.get(k) == v for k, v in _stat_key(st).items()):
            return True
    except (OSError, ValueError):
        pass
    if file_md5(path) == md5:
        _write_stamp(path, md5)
        return True
    stamp.unlink(missing_ok=True)
    return False


def manual_hint(url: str, path, md5: str | None, size: int | None = None) -> str:
    """The instructions every download error ends with: where to put the file by hand."""
    size_txt = f", {size} bytes" if size is not None else ""
    check = f"expected md5 {md5}{size_txt}" if md5 else f"no published md5{size_txt}"
    return (f"To use the file without downloading, fetch\n    {url}\nby other means (browser, wget, curl) "
            f"and put it at\n    {Path(path).resolve()}\n({check}).")


class _Progress:
    """One updating line on stderr: name, MB done / total, %, MB/s, ETA. Redrawn at most 5 times a second."""

    def __init__(self, name: str, total: int | None, start: int, enabled: bool):
        self.name, self.total, self.start, self.enabled = name, total, start, enabled
        self.t0 = self.t_last = time.monotonic()
        self.done = start
        self.width = 0

    def update(self, n: int, force: bool = False) -> None:
        self.done += n
        now = time.monotonic()
        if not self.enabled or (not force and now - self.t_last < 0.2):
            return
        self.t_last = now
        rate = (self.done - self.start) / max(now - self.t0, 1e-9)  # bytes/s of this session
        text = f"{self.name}: {self.done / 1e6:.1f}"
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            eta_txt = f"{int(eta) // 60}:{int(eta) % 60:02d}" if eta != float("inf") else "?"
            text += (f"/{self.total / 1e6:.1f} MB {100 * self.done / self.total:5.1f}% "
                     f"{rate / 1e6:.1f} MB/s ETA {eta_txt}")
        else:
            text += f" MB {rate / 1e6:.1f} MB/s"
        sys.stderr.write("\r" + text.ljust(self.width))
        sys.stderr.flush()
        self.width = len(text)

    def close(self) -> None:
        if self.enabled:
            self.update(0, force=True)
            sys.stderr.write("\n")
            sys.stderr.flush()


class _Incomplete(Exception):
    """The connection ended before all announced bytes came; worth another attempt if bytes did come."""

    def __init__(self, msg: str, got_bytes: int):
        super().__init__(msg)
        self.got_bytes = got_bytes


def _looks_like_html(head: bytes) -> bool:
    return head.lstrip().lower().startswith((b"<!doctype", b"<html"))


def _stream_once(url, part: Path, size, progress, timeout, name, max_bytes=None):
    """One GET into `part` (appending after a 206 answer to a Range request). Returns (final_url, md5, nbytes).

    Raises DownloadError for answers that will not get better by retrying (HTTP error, HTML, wrong size
    announced) and _Incomplete / requests exceptions for dropped connections.
    """
    have = part.stat().st_size if part.is_file() else 0
    headers = {"Accept-Encoding": "identity"}  # the archives must arrive byte-exact, not transfer-decoded
    if have:
        headers["Range"] = f"bytes={have}-"
    with requests.get(url, stream=True, timeout=timeout, headers=headers, allow_redirects=True) as r:
        if have and r.status_code == 416:  # the .part is not a prefix the server can continue: start afresh
            part.unlink()
            return _stream_once(url, part, size, progress, timeout, name)
        if r.status_code >= 400:
            raise DownloadError(f"the server answered HTTP {r.status_code} {r.reason} for {r.url}.")
        ctype = r.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype == "text/html":
            raise DownloadError(f"the server sent an HTML page (Content-Type {ctype}) from {r.url} instead of "
                                f"the data file; the address may have moved or need a login.")
        resumed = bool(have) and r.status_code == 206 and \
            r.headers.get("Content-Range", "").startswith(f"bytes {have}-")
        h = hashlib.md5()
        if resumed:
            with open(part, "rb") as f:
                for chunk in iter(lambda: f.read(CHUNK), b""):
                    h.update(chunk)
        else:
            have = 0  # 200 (Range ignored) or first attempt: restart from byte 0
        length = r.headers.get("Content-Length")
        total = have + int(length) if length is not None and length.isdigit() else None
        if size is not None and total is not None and total != size:
            raise DownloadError(f"the server announces {total} bytes for {r.url}, expected {size}: "
                                f"not the expected file.")
        cap = size if size is not None else (MAX_UNKNOWN_BYTES if max_bytes is None else max_bytes)
        if total is not None and total > cap:
            raise DownloadError(f"the server announces {total} bytes for {r.url}, more than the {cap} accepted "
                                f"for this file.")
        bar = _Progress(name, size or total, have, progress)
        got = 0
        try:
            with open(part, "ab" if resumed else "wb") as f:
                # the raw bytes as sent: a server that labels a .gz file `Content-Encoding: gzip` must not
                # have it unpacked on the way (the md5 is that of the file, not of its content)
                for chunk in r.raw.stream(CHUNK, decode_content=False):
                    if have + got + len(chunk) > cap:
                        what = "expected" if size is not None else "accepted for a file of unknown size"
                        raise DownloadError(f"{r.url} sent more than the {cap} bytes {what}; stopped.")
                    if not resumed and got == 0 and _looks_like_html(chunk[:64]):
                        raise DownloadError(f"the server sent an HTML page from {r.url} instead of the data file "
                                            f"(it starts with {chunk[:20]!r}).")
                    f.write(chunk)
                    h.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError,
                requests.exceptions.BaseHTTPError) as exc:   # BaseHTTPError: the raw stream's own errors
            # (protocol error, read timeout), raised unwrapped by r.raw.stream; no direct urllib3 import
            of = f" of {size or total}" if (size or total) else ""
            raise _Incomplete(f"the download is truncated: the connection broke after {have + got}{of} bytes "
                              f"({exc})", got) from exc
        finally:
            bar.close()
        expected = size if size is not None else total
        if expected is not None and have + got > expected:
            raise DownloadError(f"{r.url} sent {have + got} bytes, more than the expected {expected}.")
        if expected is not None and have + got < expected:
            raise _Incomplete(f"the download is truncated: {have + got} of {expected} bytes arrived", got)
        return r.url, h.hexdigest(), have + got


def download(url: str, path, md5: str | None, size: int | None = None, progress: bool = True,
             timeout=(10, 60), retries: int = 2, max_bytes: int | None = None) -> Path:
    """Download `url` to `path` unless `path` already holds the file with this md5; return `path`.

    Streams with requests (redirects followed; the final URL is kept in the `.md5ok` stamp), hashes md5 on the
    fly, writes `<path>.part` and moves it to `path` only when size and md5 match. A `.part` left by an
    interrupted run (Ctrl-C) is continued with an HTTP Range request if the server answers 206, else the
    download restarts. A connection that breaks after some bytes came is resumed up to `retries` times.

    Args:
        url: http(s) address. path: final file. md5: expected hex digest (32 lowercase hex digits), or None
            when no checksum is known: then the file is always downloaded (an existing `path` is replaced
            only by a complete download) and the caller must check the content; the stamp records the md5
            that came. size: expected bytes, or None. progress: one updating line on stderr.
            timeout: (connect, read) seconds. max_bytes: the most accepted when `size` is None (default
            MAX_UNKNOWN_BYTES; an endless body is stopped there).
    Raises:
        DownloadError: network failure, HTTP error, HTML answer, truncated file, wrong md5, or MINICCT_OFFLINE
            set. The message names the URL, the expected md5 and the path where a file fetched by hand is
            picked up. No file is left under `path` or `<path>.part` (except after Ctrl-C, which keeps `.part`
            for resuming).
    """
    if md5 is not None and (not isinstance(md5, str) or not _MD5_RE.match(md5)):
        raise ValueError(f"md5 must be 32 lowercase hex digits (or None if unknown), got {md5!r}")
    path = Path(path)
    if md5 is not None and is_verified(path, md5, size):
        return path
    part = path.with_name(path.name + ".part")
    hint = manual_hint(url, path, md5, size)
    existing = ""
    if path.exists():
        existing = (f"\n(The file already at {path} does not have md5 {md5}; it was left untouched.)" if md5
                    else f"\n(The file already at {path} was left untouched.)")
    if offline():
        reason = f"not downloading {url}: MINICCT_OFFLINE is set (unset it, or set it to 0, to allow downloads)."
        raise DownloadError(f"{reason}{existing}\n{hint}", reason=reason)
    try:
        check_target(path)                 # a folder at `path`, or a file where a folder should be
    except OSError as exc:
        raise DownloadError(f"cannot download {url} to {path}: {exc}", reason=str(exc)) from exc
    if progress:
        sys.stderr.write(f"downloading {url}\n")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(retries + 1):
            try:
                final_url, got_md5, nbytes = _stream_once(url, part, size, progress, timeout, path.name,
                                                          max_bytes)
                break
            except _Incomplete as exc:
                if exc.got_bytes == 0 or attempt == retries:
                    raise DownloadError(f"could not download {url}: {exc}.") from exc
                if progress:
                    sys.stderr.write(f"{exc}; trying again ({attempt + 1}/{retries})\n")
            except requests.exceptions.RequestException as exc:
                raise DownloadError(f"could not download {url} (no network, or the server is unreachable): "
                                    f"{type(exc).__name__}: {exc}") from exc
        if md5 is not None and got_md5 != md5:
            raise DownloadError(f"the file from {final_url} ({nbytes} bytes) has md5 {got_md5}, expected {md5}: "
                                f"corrupted, or the server now serves a different file.")
        _stamp_path(path).unlink(missing_ok=True)
        commit(part, path)                 # fsync, os.replace, fsync folder; removes `.part` on failure
    except KeyboardInterrupt:
        raise  # keep the .part: the next call resumes it
    except DownloadError as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{exc}{existing}\n{hint}", reason=str(exc)) from exc.__cause__
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    _write_stamp(path, got_md5, final_url)  # == md5 when one was given
    if progress and final_url != url:
        sys.stderr.write(f"(redirected to {final_url})\n")
    return path


def fetch(remote: RemoteFile, root=None, allow_download: bool = True, progress: bool = True) -> Path:
    """Path of `remote` in `root` (default `data_dir()`), verified by md5; downloaded first when needed.

    With `allow_download=False` a missing or mismatching file raises FileNotFoundError with the manual-download
    instructions instead of touching the network.
    """
    root = Path(root) if root is not None else data_dir()
    path = root / remote.filename
    if is_verified(path, remote.md5, remote.size):
        return path
    if not allow_download:
        state = "does not have the expected md5/size" if path.exists() else "is missing"
        raise FileNotFoundError(f"{path} {state} and download=False.\n"
                                + manual_hint(remote.url, path, remote.md5, remote.size))
    return download(remote.url, path, remote.md5, remote.size, progress=progress)


def atomic_savez(path, **arrays) -> Path:
    """np.savez (uncompressed: fast to load) to `path` atomically (minicct.io.atomic)."""
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def load_npz_cache(path, source: str, expect: dict | None = None, num_classes: int | None = None) -> dict | None:
    """Arrays of a cache written by `atomic_savez`, or None if absent, unreadable, made from other sources or
    not of the expected size (a message on stderr says why; the caller rebuilds it).

    `source` is the string (e.g. the archive md5) the cache was built from; it is stored under `source`.
    `expect`: name -> (dtype, shape) every listed array must have (e.g. x_train uint8 (50000, 32, 32, 3)):
    a cache cut short, or built by other code, is not trusted on its source string alone.
    `num_classes`: labels (arrays named y_*) must lie in 0..num_classes-1.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if "source" not in z.files or str(z["source"]) != source:
                return None
            arrays = {k: z[k] for k in z.files if k != "source"}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        sys.stderr.write(f"ignoring unreadable cache {path} ({exc}); rebuilding it\n")
        return None
    problem = None
    for k, (dtype, shape) in (expect or {}).items():
        a = arrays.get(k)
        if a is None:
            problem = f"it has no array {k!r}"
        elif a.dtype != np.dtype(dtype) or a.shape != tuple(shape):
            problem = f"{k} is {a.dtype} {a.shape}, expected {np.dtype(dtype)} {tuple(shape)}"
        if problem:
            break
    if problem is None and num_classes is not None:
        for k, a in arrays.items():
            if k.startswith("y_") and a.size and (a.min() < 0 or a.max() >= num_classes):
                problem = f"{k} holds labels outside 0..{num_classes - 1}"
                break
    if problem is not None:
        sys.stderr.write(f"ignoring the cache {path}: {problem}; rebuilding it\n")
        return None
    return arrays
