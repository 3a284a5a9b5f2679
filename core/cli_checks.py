"""What the CLI can know is wrong before a command computes anything (``python -m core``).

A device name, a seed past 64 bits, every output file and folder, a store that cannot be made:
each refused in one line before the work, because a result that cannot be written is otherwise
computed, then lost.
"""

from __future__ import annotations

import errno
from pathlib import Path

__all__ = ["UserError", "check_before_work", "check_writable"]


class UserError(Exception):
    """A mistake in the command line: said in one line (``error: ...``), exit code 2."""


def check_writable(path: str | None, flag: str, fix: str = "choose a writable path, or '-' for stdout",
                   example: str = "result.json") -> None:
    """Refuse an output path that cannot be written, before the work: a grid run without --db
    would otherwise be computed, then lost. Probes by creating the file (and any folders it
    needs) and removing them again, so a check leaves nothing behind."""
    if path in (None, "-"):
        return
    out = Path(path)  # as the CLI writes it: a shell has expanded '~' already
    created = []
    try:
        if out.is_dir():
            raise UserError(f"{flag} {path!r} is a folder; give a file path in it, e.g. {str(out / example)!r}")
        missing = []  # the folders the CLI's writer will create
        folder = out.parent
        while not folder.exists() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        for new_folder in reversed(missing):
            new_folder.mkdir()
            created.append(new_folder)
        if out.exists():
            open(out, "a").close()  # appending nothing leaves the file as it is
        else:
            open(out, "x").close()
            out.unlink()
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:  # no folder can hold that name
            fix = "choose a shorter path"
        raise UserError(f"cannot write {flag} {path!r} ({reason}): {fix}") from None
    finally:
        for new_folder in reversed(created):
            new_folder.rmdir()


def check_store(path: str | None) -> None:
    """``--db``: a store that exists is the store's to open (one it cannot write is still read, and
    it says so); a new one must be creatable, as an output file is, before the work."""
    if not path:  # '': the default store (runs, worker) or none (grid), as the commands read it
        return
    store = Path(path).expanduser()  # as the store opens it
    try:
        exists = store.is_file()
    except OSError:  # a name too long to look up: the probe says so in words
        exists = False
    if not exists:
        check_writable(str(store), "--db", fix="choose a store file in a folder you can write to",
                        example="stitchlab.sqlite3")


def check_out(out: str | None, command: str) -> None:
    """``--out``: zoo train writes a folder (its manifest is the file probed), lesson build one file."""
    if out is None:
        return
    if command == "zoo":
        from core.models.zoo import manifest_path

        check_writable(str(manifest_path(Path(out))), "--out", fix="choose a folder you can write to")
    else:
        check_writable(out, "--out", fix="choose a writable path", example="lesson.json")


def check_before_work(args) -> None:
    """What can be known wrong before a command computes anything: a device name, every output
    file and folder (a result that cannot be written is otherwise lost after the work), and a
    store file that cannot be made."""
    if getattr(args, "device", None) is not None:
        from core.device import check_device_name

        check_device_name(args.device)
    # torch takes seeds and class numbers as 64-bit integers; past that its words are about C types
    for flag in ("seed", "target"):
        value = getattr(args, flag, None)
        if value is not None and not -2**63 <= value < 2**63:
            raise UserError(f"--{flag} {value} is too large: give a whole number such as 0 or 1")
    for flag in ("json", "png"):
        check_writable(getattr(args, flag, None), f"--{flag}")
    check_store(getattr(args, "db", None))
    check_out(getattr(args, "out", None), args.command)
