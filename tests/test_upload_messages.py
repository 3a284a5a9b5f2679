"""Uploading checkpoints (the Models page) and the one-line messages bad files and devices get:
no ANSI codes, no Python exception names or object reprs, no CLI flags in the dashboard."""

import io
import pickle
import re
import struct
import time
import zlib

import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.models import zoo
from core.models.checkpoints import CheckpointError, read_checkpoint, save_checkpoint

APP = str(__import__("pathlib").Path(__file__).resolve().parent.parent / "app.py")
# What a user must never read: torch's or Python's internals.
INTERNALS = re.compile(r"\x1b|Error:|Error\b|pop from empty list|0x[0-9a-f]{6,}|object at|Traceback|"
                       r"PytorchStreamReader|weights_only|add_safe_globals")


def _zoo_bytes(key: str) -> bytes:
    return (zoo.manifest_path().parent / zoo.zoo_entry(key)["file"]).read_bytes()


def _one_clean_line(message: str) -> str:
    """The message as the reader sees it: the page escapes Markdown in it (ui.text.plain)."""
    message = re.sub(r"\\(.)", r"\1", message)
    assert "\n" not in message and not INTERNALS.search(message), message
    return message


# --- what a file that is not a usable checkpoint is told ---------------------------------------

def test_a_whole_pickled_model_is_refused_in_one_line_naming_its_class(tmp_path):
    from core.models.architectures import build_architecture

    whole = tmp_path / "whole.pt"
    torch.save(build_architecture(zoo.zoo_entry("resnet_1111-s0")["config"]), whole)  # torch.save(model)
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(whole)
    message = _one_clean_line(str(caught.value))
    assert "SmallResNet" in message and "torch.save(model.state_dict(), PATH)" in message


# Seeds whose 4,000 random bytes make torch.load raise (torch 2.x): 0 UnpicklingError ("Weights only load
# failed..."), 2 IndexError ("pop from empty list"), 61 IndexError, 20 KeyError, 195 UnicodeDecodeError.
@pytest.mark.parametrize("seed", [0, 2, 61, 20, 195])
def test_random_bytes_are_not_a_checkpoint(tmp_path, seed):
    import random

    noise = tmp_path / "noise.pt"
    noise.write_bytes(random.Random(seed).randbytes(4000))
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(noise)
    message = _one_clean_line(str(caught.value))
    assert message.startswith("noise.pt is not a readable checkpoint") and ".safetensors" in message


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch notes the plain pickle's protocol
def test_a_cut_torch_file_and_a_plain_pickle_say_what_they_are(tmp_path):
    saved = tmp_path / "saved.pt"
    torch.save(torch.nn.Linear(4, 3).state_dict(), saved)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(saved.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="looks like a torch.save file but cannot be read: it is truncated"):
        read_checkpoint(cut)
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps({"weight": [1.0, 2.0]}))
    with pytest.raises(CheckpointError, match="is a plain Python pickle"):
        read_checkpoint(plain)
    for path in (cut, plain):
        with pytest.raises(CheckpointError) as caught:
            read_checkpoint(path)
        _one_clean_line(str(caught.value))


def test_a_cut_safetensors_file_names_no_library_internals(tmp_path):
    good = save_checkpoint(torch.nn.Linear(4, 3), tmp_path / "good.safetensors", {"config": {}})
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="truncated") as caught:
        read_checkpoint(cut)
    assert "Deserializ" not in str(caught.value) and "MetadataIncomplete" not in str(caught.value)
    _one_clean_line(str(caught.value))


# --- pictures on the Attributions page ---------------------------------------------------------

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _broken_pictures() -> dict[str, bytes]:
    signature = b"\x89PNG\r\n\x1a\n"
    grey_8x8 = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0))
    first_row = zlib.compressobj()
    partial = first_row.compress(b"\x00" + b"\x80" * 8) + first_row.flush(zlib.Z_SYNC_FLUSH)  # the decoder wants more
    return {
        "random bytes": bytes(range(256)) * 8,
        "text named .png": b"definitely not a picture",
        "empty": b"",
        "PNG with a cut header": signature + _png_chunk(b"IHDR", b"\x00\x00"),  # Pillow: ValueError, its own words
        "PNG whose next chunk is garbage": (signature + grey_8x8 + _png_chunk(b"IDAT", partial)
                                             + struct.pack(">I", 0) + b"I\xd6ND" + b"\x00" * 4),  # Pillow: SyntaxError
        "PPM with a bad size": b"P6\n3x 3\n255\n" + b"\x00" * 27,  # Pillow: int()'s ValueError
    }


@pytest.mark.parametrize("what", list(_broken_pictures()))
def test_a_file_that_is_not_a_picture_gets_one_sentence(what):
    from ui.attributions import uploaded_pixels

    with pytest.raises(ValueError) as caught:
        uploaded_pixels(_broken_pictures()[what], (1, 32, 32))
    assert str(caught.value) == "that file is not a picture StitchLab can read; upload a PNG or JPEG"


def test_a_picture_still_reads():
    from PIL import Image

    from ui.attributions import uploaded_pixels

    png = io.BytesIO()
    Image.new("RGB", (40, 30), (0, 0, 255)).save(png, "PNG")
    assert len(uploaded_pixels(png.getvalue(), (3, 32, 32))) == 3


# --- a CUDA device without a GPU: the CLI's words and the dashboard's ----------------------------

def test_a_missing_gpu_is_said_neutrally_by_the_engine(monkeypatch):
    from core.device import resolve_device
    from core.errors import DeviceUnavailable

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceUnavailable) as caught:
        resolve_device("cuda")
    assert "no CUDA GPU" in str(caught.value) and "--device" not in str(caught.value)


def test_the_cli_says_use_device_cpu(monkeypatch, tmp_path, capsys):
    from core import cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["attribute", "zoo/resnet_1111-s0", "--device", "cuda", "--png", str(tmp_path / "x.png")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["error: device 'cuda' was asked for but no CUDA GPU is available here: use --device cpu or auto"]


def _show_job_errors(failed: dict):
    import streamlit as st

    from ui import jobs

    st.session_state.job_errors = [failed]
    jobs.show_errors()


def test_the_dashboard_says_pick_a_device_in_the_sidebar(worker, monkeypatch):
    """The worker fails the job (a predictions job asked for on 'cuda'); the page shows its error."""
    from core import runs
    from core.runs import jobs
    from core.runs.analysis import predictions_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    job_id = runs.submit(worker, "predictions", [predictions_config("zoo/resnet_1111-s0", "fashion-mnist")],
                         "cuda").job_id
    deadline = time.monotonic() + 120  # a guard against a hang, not a speed target: it fails in milliseconds
    while jobs.get(worker, job_id)["status"] in jobs.ACTIVE and time.monotonic() < deadline:
        time.sleep(0.05)
    failed = jobs.get(worker, job_id)
    assert failed["status"] == "failed"
    page = AppTest.from_function(_show_job_errors, kwargs={"failed": failed})
    page.run()
    assert not page.exception
    assert [e.value for e in page.error] == [
        "predictions failed: device 'cuda' was asked for but no CUDA GPU is available here: "
        "pick cpu or auto as Device in the sidebar"]


# --- naming and replacing uploads (headless) -------------------------------------------------------

def test_an_upload_without_a_name_is_named_after_its_file(uploads_home):
    from core.models import uploads

    added = uploads.save_upload(_zoo_bytes("resnet_1111-s1"), "resnet small.safetensors", "")
    assert added.endswith("/uploads/resnet-small.safetensors")
    assert uploads.default_name("net v2 (final).pt") == "net-v2-final"


def test_a_name_longer_than_a_file_name_may_be_is_refused_in_one_line(uploads_home):
    from core.models.uploads import save_upload

    with pytest.raises(CheckpointError) as caught:  # not OSError: File name too long
        save_upload(_zoo_bytes("resnet_1111-s1"), "mine.safetensors", "n" * 250)
    assert str(caught.value) == "the name is 250 characters long; shorten it to at most 100"
    # The browser's file name may be as long as it likes: the name given is what counts.
    added = save_upload(_zoo_bytes("resnet_1111-s1"), "f" * 250 + ".safetensors", "short")
    assert added.endswith("/short.safetensors")


def test_an_upload_under_a_taken_name_is_refused_unless_replacing_and_old_runs_stay(uploads_home, store):
    from core import runs
    from core.models.sources import fingerprint
    from core.models.uploads import save_upload
    from core.runs.analysis import predictions_config

    first = save_upload(_zoo_bytes("resnet_1111-s1"), "mine.safetensors", "mine")
    path = first.removeprefix("file:")
    before = open(path, "rb").read()
    config = predictions_config(first, "fashion-mnist")
    old_run = store.create_run("predictions", runs.identity("predictions", config, None))  # a run of the old weights
    store.update_run(old_run, status="done")
    assert runs.find(store, "predictions", config)["id"] == old_run
    old_weights = fingerprint(first)

    with pytest.raises(CheckpointError, match="a checkpoint named mine exists already"):  # UploadExists
        save_upload(_zoo_bytes("resnet_1111-s0"), "other.safetensors", "mine")
    assert open(path, "rb").read() == before  # not a byte changed

    assert save_upload(_zoo_bytes("resnet_1111-s0"), "other.safetensors", "mine", replace=True) == first
    assert open(path, "rb").read() != before and fingerprint(first) != old_weights
    assert store.get_run(old_run)["status"] == "done"  # the old weights' run is kept ...
    assert runs.find(store, "predictions", config) is None  # ... and never served for the new weights


# --- the Models page ---------------------------------------------------------------------------

@pytest.fixture
def models_page(uploads_home, monkeypatch):
    from core.runs import jobs

    monkeypatch.setattr(jobs, "ensure_worker", lambda *a, **k: 0)
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/models.py")
    at.run()
    assert not at.exception, at.exception
    return at


def _upload(at, filename: str, data: bytes) -> None:
    at.file_uploader(key="models_upload").set_value((filename, data, "application/octet-stream"))
    at.run()


def _click(at, label: str) -> None:
    next(b for b in at.button if b.label == label).click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def test_the_name_box_is_filled_from_the_file_and_the_first_add_works(models_page, uploads_home):
    at = models_page
    _upload(at, "my-net.safetensors", _zoo_bytes("resnet_1111-s1"))
    assert at.text_input(key="models_name").value == "my-net"
    _click(at, "Add checkpoint")
    assert not at.error, [e.value for e in at.error]
    assert len(at.success) == 1 and "my-net.safetensors" in at.success[0].value
    assert (uploads_home / "uploads" / "my-net.safetensors").is_file()
    _upload(at, "second one.pt", _zoo_bytes("resnet_1111-s0"))  # a new file: a new name
    assert at.text_input(key="models_name").value == "second-one"


def test_uploading_over_a_name_asks_first_and_replaces_only_when_confirmed(models_page, uploads_home):
    at = models_page
    kept = uploads_home / "uploads" / "mine.safetensors"
    _upload(at, "mine.safetensors", _zoo_bytes("resnet_1111-s1"))
    _click(at, "Add checkpoint")
    original = kept.read_bytes()

    _upload(at, "mine.safetensors", _zoo_bytes("resnet_1111-s0"))  # other weights, the same name
    _click(at, "Add checkpoint")
    assert len(at.warning) == 1 and "named **mine** exists already" in at.warning[0].value
    assert not at.success and kept.read_bytes() == original
    _click(at, "Keep the old one")
    assert not at.warning and "Kept the old **mine**" in at.info[-1].value
    assert kept.read_bytes() == original

    _click(at, "Add checkpoint")
    assert len(at.warning) == 1
    _click(at, "Replace")
    assert not at.warning and not at.error
    assert len(at.success) == 1 and "mine.safetensors" in at.success[0].value
    assert kept.read_bytes() != original


def test_a_question_about_one_name_is_dropped_when_the_name_changes(models_page, uploads_home):
    at = models_page
    _upload(at, "mine.safetensors", _zoo_bytes("resnet_1111-s1"))
    _click(at, "Add checkpoint")
    _click(at, "Add checkpoint")
    assert len(at.warning) == 1
    at.text_input(key="models_name").set_value("mine-too").run()
    assert not at.warning
    _click(at, "Add checkpoint")
    assert len(at.success) == 1 and (uploads_home / "uploads" / "mine-too.safetensors").is_file()


@pytest.mark.parametrize("what,expected", [("long name", "shorten it to at most"),
                                           ("whole model", "torch.save(model.state_dict(), PATH)"),
                                           ("random bytes", "noise.pt is not a readable checkpoint")])
def test_the_page_shows_one_clean_line_for_a_bad_upload(models_page, tmp_path, what, expected):
    at = models_page
    if what == "long name":
        _upload(at, "mine.safetensors", _zoo_bytes("resnet_1111-s1"))
        at.text_input(key="models_name").set_value("n" * 250).run()
    elif what == "whole model":
        whole = io.BytesIO()
        torch.save(torch.nn.Linear(4, 3), whole)
        _upload(at, "whole.pt", whole.getvalue())
    else:
        _upload(at, "noise.pt", bytes(range(256)) * 16)
    _click(at, "Add checkpoint")
    assert len(at.error) == 1 and at.error[0].value.startswith("Could not add ")
    assert expected in _one_clean_line(at.error[0].value)
    assert not list((tmp_path / "home" / "uploads").glob("*.safetensors"))
