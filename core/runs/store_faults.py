"""What can go wrong with the store's file, in words a user can act on.

* :func:`classify` names a SQLite error: ``full`` (the disk), ``read-only`` (the file, its
  folder or its file system), ``damaged`` (malformed pages), or None (anything else).
* :func:`set_aside` moves a damaged store to ``NAME.damaged-<time>`` beside it (its write-ahead
  log with it, so that nothing committed is lost to a later recovery), never over another file.
* :func:`process_identity` and :func:`process_alive` tell whether the process that was computing
  a run is still there (a pid alone can be reused; its start time cannot).
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

__all__ = ["APP_NUMBER", "HOST", "classify", "read_uri", "quiet_read_order", "check_header", "is_ours", "set_aside",
           "process_identity", "process_alive"]

SQLITE_MAGIC = b"SQLite format 3\x00"
# The header's application_id (bytes 68-71): "STLB". It lets a store whose own tables are damaged
# still be known as StitchLab's, so that it is moved aside rather than refused as a stranger's.
APP_NUMBER = 0x53544C42
HOST = socket.gethostname()
_NEARLY_FULL = 1 << 20  # bytes free below which an I/O error while writing is taken for a full disk
_SIDE_FILES = ("-wal", "-journal")  # what SQLite reads with the file; the -shm index is rebuilt from them


def classify(exc: sqlite3.Error, path: Path) -> str | None:
    """``full``, ``read-only``, ``damaged`` or None. SQLite says ``full`` and ``read-only`` itself
    when it can; when it cannot even make its shared-memory file beside the store it reports an
    open or I/O error, and the file system is asked why."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    text = str(exc).lower()
    if name.startswith("SQLITE_FULL") or "database or disk is full" in text:
        return "full"
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text or "not a database" in text:
        return "damaged"
    if name.startswith("SQLITE_READONLY") or "readonly database" in text:
        return "read-only"
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_IOERR")) or "unable to open" in text or "disk i/o error" in text:
        if not _writable(path):
            return "read-only"
        if _free_bytes(path) < _NEARLY_FULL:
            return "full"
    return None


def _writable(path: Path) -> bool:
    # os.access says no on a read-only file system even to root (EROFS), where mode bits do not
    return os.access(path.parent, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))


def _free_bytes(path: Path) -> int:
    try:
        return shutil.disk_usage(path.parent).free
    except OSError:
        return 1 << 62


def read_uri(path: Path, immutable: bool = False) -> str:
    """A read-only SQLite URI of ``path``. ``immutable``: also without the shared-memory file
    (a read-only file system where none was left); the write-ahead log is then not read, which
    is only right when nobody can write the file either."""
    return f"file:{quote(str(path))}?mode=ro" + ("&immutable=1" if immutable else "")


def quiet_read_order(path: Path) -> tuple[bool, bool]:
    """``immutable`` values to try for reading a file left alone: immutable first when it has no
    write-ahead log to read, since a plain read-only connection leaves SQLite's side files beside it."""
    return (False, True) if Path(f"{path}-wal").exists() else (True, False)


def check_header(path: Path) -> bytes:
    """The file's first 100 bytes (SQLite's header); a file that is not SQLite's at all is
    somebody else's, and is refused as it is."""
    from core.errors import StoreError

    with open(path, "rb") as f:
        header = f.read(100)
    if not header.startswith(SQLITE_MAGIC):
        raise StoreError(f"{path} is not a usable SQLite database (it is not an SQLite file at all); it was left as "
                         f"it is. Choose another file with STITCHLAB_DB or --db")
    return header


def is_ours(path: Path) -> bool:
    """Whether a damaged SQLite file is a StitchLab store: its header's application id, or else
    (a store made before the id was written) its meta table, if that can still be read."""
    try:
        header = check_header(path)
    except Exception:  # noqa: BLE001 - unreadable or not SQLite: not known to be ours
        return False
    if len(header) >= 72 and int.from_bytes(header[68:72], "big") == APP_NUMBER:
        return True
    for immutable in quiet_read_order(path):
        try:
            conn = sqlite3.connect(read_uri(path, immutable), uri=True)
            try:
                return conn.execute("SELECT value FROM meta WHERE key = 'app'").fetchone()[0] == "stitchlab"
            finally:
                conn.close()
        except (sqlite3.Error, TypeError):
            continue
    return False


def set_aside(path: Path) -> Path:
    """Move ``path`` (and its write-ahead log or journal) to ``NAME.damaged-<time>`` in the same
    folder and return the new path. Never over an existing file: each name is linked first (which
    fails on an existing name), the old name unlinked after."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        target = path.with_name(f"{path.name}.damaged-{stamp}" + (f"-{n}" if n > 1 else ""))
        if not any(Path(f"{target}{side}").exists() for side in ("", *_SIDE_FILES)):
            break
    else:  # pragma: no cover - a thousand damaged stores in one second
        raise FileExistsError(f"no free name for {path}.damaged-{stamp}")
    _move(path, target)
    for side in _SIDE_FILES:
        if Path(f"{path}{side}").exists():
            _move(Path(f"{path}{side}"), Path(f"{target}{side}"))
    Path(f"{path}-shm").unlink(missing_ok=True)  # an index of the old log: stale for any new file
    return target


def _move(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: rename, having checked the name is free
        if target.exists():
            raise FileExistsError(target) from None
        os.rename(source, target)
        return
    source.unlink()


def process_identity(pid: int | None = None) -> str:
    """Who a process is, across pid reuse: its pid's start time since this boot (Linux /proc),
    else the pid alone."""
    pid = os.getpid() if pid is None else pid
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return f"{boot}:{fields[19]}"  # field 22 of stat, counted after the command name
    except (OSError, IndexError):
        return str(pid)


def process_alive(pid: int, identity: str) -> bool:
    """Whether the process ``pid`` that had ``identity`` still runs on this host (not a zombie)."""
    if not Path("/proc/self/stat").exists():  # no /proc: ask the kernel about the pid alone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and process_identity(pid) == identity
