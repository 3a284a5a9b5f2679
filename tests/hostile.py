"""Hostile inputs for the command line, shared by tests/test_cli_hostile.py,
tests/test_cli_properties.py and bench/adversarial_probes.py.

The CLI is driven in-process (``core.cli.main``): a traceback is then an exception that leaves
``main``, and a clean refusal is exit code 2 with one ``error: ...`` line on stderr.
"""

from __future__ import annotations

import contextlib
import io
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

# Small enough that a command which runs finishes in well under a second on two cores.
SMALL_DATA = 64
SMALL_MODEL, OTHER_SMALL_MODEL = "zoo/resnet_1111-s0", "zoo/resnet_1111-s1"

NUMBERS = ["nan", "inf", "-inf", "-1", "0", "1", "3", "0.5", "1e308", "-1e308", "1e-308", str(2**64), str(10**30),
           str(-10**30), "1_000", "0x10", "", " ", "abc"]
STRINGS = ["", " ", "x" * 300, "ü→🙂 Ωmega", "../", "../../etc/passwd", "~", "-", "--", ",", ",,", "a,,b",
           "stem,stem", "\t\x01\x1b[31mred\x1b[0m", "\u202eevil", "'; DROP TABLE runs; --", "%s%n{0}", "null"]
MODEL_NAMES = [SMALL_MODEL, OTHER_SMALL_MODEL, "zoo/nope", "torchvision/unknown", "torchvision/Resnet18",
               "torchvision/resnet18@random", "torchvision/vit_h_14@random:1", "zoo/x@random:-1",
               f"{SMALL_MODEL}@random:-1", f"{SMALL_MODEL}@random:{10**30}", f"{SMALL_MODEL}@bogus",
               f"{SMALL_MODEL}@random:²", "file:/nonexistent", "file:", "file:/dev/null", "file:/etc", "paper/nope",
               "zoo/", "zoo/../zoo/resnet_1111-s0", "nope", ""]
# Never an absolute path that exists and can be written: the tests run as whatever user runs them.
OUTPUT_PATHS = ["-", "out.json", "", "../out.json", "sub/dir/out.json", "x" * 300 + ".json", "ü→🙂.json",
                "/proc/stitchlab/out.json", "/", ".", "/dev/full", "plain-file/out.json"]
DATASETS = ["fashion-mnist", "", "mnist", "folder:", "folder:/nonexistent", "folder:.", "cifar10x", "../x"]
DEVICES = ["cpu", "auto", "tpu", "cuda:x", "", "CPU", "meta", "cpu:0", "cuda:99"]


@dataclass
class Outcome:
    """What one command line did: exit code, stdout, stderr, and the exception that left main (a bug)."""

    code: int | None
    stdout: str
    stderr: str
    exception: BaseException | None = None

    @property
    def messages(self) -> list[str]:
        """stderr's lines, without the CLI's own status: the redrawn progress bar (``[ 12.5%] ...``)
        and ``wrote PATH`` for each file written before a later step failed."""
        return [line for line in re.split(r"[\r\n]", self.stderr)
                if line.strip() and not line.startswith(("[", "wrote "))]

    @property
    def clean(self) -> bool:
        """Ran (exit 0), or refused in exactly one ``error:`` line with a non-zero code, no traceback."""
        if self.exception is not None or "Traceback" in self.stderr:
            return False
        if self.code == 0:
            return True
        return self.code not in (None, 0) and len(self.messages) == 1 and self.messages[0].startswith("error: ")

    def describe(self) -> str:
        if self.exception is not None:
            return f"{type(self.exception).__name__}: {self.exception}"
        return f"exit {self.code}: {self.stderr.strip()[-500:]!r}"


def run_cli(argv: list[str]) -> Outcome:
    """``python -m core ARGV``, in this process."""
    from core.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except Exception as exc:  # noqa: BLE001 - an exception out of main is the bug being looked for
        return Outcome(None, out.getvalue(), err.getvalue(), exc)
    return Outcome(code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def small_datasets(limit: int = SMALL_DATA):
    """Every dataset cut to its first ``limit`` images, so that any command that runs runs fast
    (a hostile --train-limit of 10**30 is then as cheap as 64)."""
    from core.data import datasets

    original = datasets._load_cached
    datasets._load_cached = lambda name, split, download: original(name, split, download).head(limit)
    try:
        yield
    finally:
        datasets._load_cached = original


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header says ``width`` x ``height`` (1-bit grey) and whose pixel data is a few
    bytes: what a decompression bomb looks like to anything that checks the header first."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return path


def image_folder(root: Path, bomb: tuple[int, int] | None = None) -> Path:
    """``root/{shirt,shoe}/`` with two small images each; ``bomb``: plus ``root/shoe/bomb.png`` of that size."""
    from PIL import Image

    for k, name in enumerate(("shirt", "shoe")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            Image.new("RGB", (28, 28), color=(k * 200, 40 * i, 90)).save(root / name / f"{i}.png")
    if bomb:
        png_header(root / "shoe" / "bomb.png", *bomb)
    return root
