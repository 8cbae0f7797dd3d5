"""The one atomic-write path of minicct: a file appears under its final name complete, or not at all.

    atomic_write(path, write)      write(f) fills a temporary file in path's folder (binary, seekable);
                                   then fsync(file), chmod 0644, os.replace(tmp, path), fsync(folder)
    atomic_write_bytes / _text     the same for a bytes / str payload
    commit(tmp, path)              the last three steps for a temporary the caller wrote itself
                                   (downloads: `<name>.part`, kept across runs for resuming)

Temporaries are named `<name>.<pid>-<random>.tmp`. A process killed mid-write (kill -9, power loss) leaves
its temporary behind; the next write of the same target removes the temporaries of processes that no
longer run (`sweep_stale`), so repeated crashes never pile up copies of a checkpoint. On any failure --
including a directory sitting at the target path -- the temporary is removed and the old file is untouched.
"""
from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "commit", "sweep_stale", "check_target"]

FILE_MODE = 0o644          # an ordinary file, readable by the other users of a shared data folder
LEGACY_TMP_AGE = 3600.0    # seconds: temporaries without a pid (older minicct) are stale after an hour


def check_target(path) -> Path:
    """The target as a Path, or a clear error when no file can be written there (before any work)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give the path of a file to write (e.g. {path}/out.npz)")
    anc = path.parent
    while not anc.exists() and anc != anc.parent:   # nearest existing ancestor
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {anc} is a file, not a folder")
    if anc.exists() and not os.access(anc, os.W_OK | os.X_OK):
        what = "the folder" if anc == path.parent else f"cannot create {path.parent}:"
        raise PermissionError(f"cannot write {path}: {what} {anc} is not writable")
    if anc == path.parent:            # a real probe: catches read-only mounts and ACLs that access() misses
        try:
            fd, probe = tempfile.mkstemp(prefix=f"{path.name}.{os.getpid()}-", suffix=".tmp", dir=anc)
        except OSError as exc:
            raise PermissionError(f"cannot write {path}: creating a file in {anc} fails ({exc.strerror})") from exc
        os.close(fd)
        os.unlink(probe)
    return path


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def sweep_stale(path) -> list:
    """Remove temporaries of `path` left by writers that died; returns the removed paths.

    `<name>.<pid>-<random>.tmp` goes when that pid no longer runs; `<name>.<random>.tmp` (the old naming,
    no pid) when it is older than LEGACY_TMP_AGE. Temporaries of running processes are never touched.
    """
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        return []
    pat = re.compile(re.escape(path.name) + r"\.(?:(\d+)-)?[A-Za-z0-9_]{6,}\.tmp")
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for e in entries:
        m = pat.fullmatch(e.name)
        if m is None:
            continue
        try:
            if not e.is_file(follow_symlinks=False):
                continue
            if m.group(1) is not None:
                stale = not _pid_alive(int(m.group(1)))
            else:
                stale = time.time() - e.stat(follow_symlinks=False).st_mtime > LEGACY_TMP_AGE
            if stale:
                os.unlink(e.path)
                removed.append(Path(e.path))
        except OSError:
            continue
    return removed


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit(tmp, path) -> Path:
    """fsync `tmp`, give it FILE_MODE and move it to `path` (os.replace), then fsync the folder.
    `tmp` must be in path's folder. A directory at `path` raises IsADirectoryError; `tmp` is then removed."""
    tmp, path = Path(tmp), Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a directory; cannot put a file there (move the folder away)")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write(path, write) -> Path:
    """Call `write(f)` on a binary file opened in path's folder, then move it to `path` atomically.

    Creates the folder if needed and first removes stale temporaries of the same target. On any exception
    (including KeyboardInterrupt) the temporary is deleted and whatever was at `path` stays as it was.
    Returns `path` (a Path).
    """
    path = check_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a directory; cannot put a file there (move the folder away)")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))
