"""The Attributions page's extras: a gallery of test-image thumbnails whose click selects the image
(and the URL says so), a PNG of the figure to download, and a word on polarity for an upload
(Fashion-MNIST is light on black: a dark object on a light background must be inverted)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from core.data.pixels import load_test_images
from core.runs import jobs
from core.runs.store import Store
from ui import attributions as attr
from ui.gallery import PER_PAGE, page_of, thumbnail

APP = str(Path(__file__).resolve().parent.parent / "app.py")
SNEAKER, PULLOVER = 7, 2
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def scored(monkeypatch):
    """The receiver's answers on the test set, as stored by the worker's "predictions" job: labels
    0..9 in turn, every answer right but test image 42's (a pullover taken for a dress)."""
    labels = np.arange(10_000) % 10
    predictions = labels.copy()
    predictions[42] = 3
    real = attr.predictions
    monkeypatch.setattr(attr, "predictions", lambda receiver, dataset: (
        real(receiver, dataset)[0], {"labels": labels.tolist(), "predictions": predictions.tolist()}))
    return labels, predictions


def _attributions_page(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update(params)
    at.run()
    at.switch_page("pages/attributions.py")
    at.run()
    _no_trouble(at)
    return at


def _no_trouble(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _shown_index(at: AppTest) -> int:
    (caption,) = [c.value for c in at.caption if c.value.startswith("test image #")]
    return int(caption[len("test image #"):].split(":")[0])


# -- the gallery ----------------------------------------------------------------------------------

def test_a_thumbnail_click_selects_that_test_image_and_the_url_says_so(app_db, scored):
    at = _attributions_page()
    at.selectbox(key="attr_class").set_value("Sneaker").run()
    sneakers = np.flatnonzero(scored[0] == SNEAKER)  # 7, 17, 27, ...
    assert _shown_index(at) == sneakers[0]
    assert len(at.get("image")) == PER_PAGE  # one thumbnail per image of the first page
    at.button(key=f"attr_pos_pick_{sneakers[3]}").click().run()
    _no_trouble(at)
    assert _shown_index(at) == sneakers[3]
    assert at.slider(key="attr_pos").value == 3
    assert at.query_params["attr_pos"] == "3"  # a shared link opens the same image
    at.button(key="attr_pos_gallery_forward").click().run()  # the next page: the selection stays
    assert _shown_index(at) == sneakers[3]
    at.button(key=f"attr_pos_pick_{sneakers[PER_PAGE]}").click().run()
    assert _shown_index(at) == sneakers[PER_PAGE] and at.query_params["attr_pos"] == str(PER_PAGE)


def test_a_link_to_an_image_opens_the_gallery_on_its_page(app_db, scored):
    at = _attributions_page(attr_class="Sneaker", attr_pos="30")
    sneakers = np.flatnonzero(scored[0] == SNEAKER)
    assert _shown_index(at) == sneakers[30]
    selected = [b for b in at.button if (b.key or "").startswith("attr_pos_pick_") and b.proto.type == "primary"]
    assert [b.key for b in selected] == [f"attr_pos_pick_{sneakers[30]}"]
    assert PER_PAGE == 16 and any(c.value == "Images 17–32 of 1,000 (page 2 of 63)" for c in at.caption)


def test_a_filter_with_a_single_match_shows_it(app_db, scored):
    """A slider needs two ends: the page used to fail when one image matched."""
    at = _attributions_page(attr_class="Pullover", attr_which="wrong")
    assert _shown_index(at) == 42
    assert not [s for s in at.slider if s.key == "attr_pos"]


def test_thumbnails_are_the_test_images_with_square_pixels():
    images = load_test_images("fashion-mnist")
    assert images.shape == (10_000, 1, 32, 32) and images.dtype == np.uint8
    assert not images[:, :, :2].any() and not images[:, :, :, -2:].any()  # zero-padded from 28, as served
    big = thumbnail(images[5], scale=4)
    assert big.shape == (128, 128) and (big[::4, ::4] == images[5, 0]).all() and (big[3::4, 3::4] == images[5, 0]).all()
    assert thumbnail(np.zeros((3, 32, 32), np.uint8), scale=2).shape == (64, 64, 3)
    assert page_of(30, 1000, per_page=12) == (2, 84) and page_of(999, 1000, per_page=12) == (83, 84)
    assert page_of(0, 1) == (0, 1)


def test_the_torch_free_reader_matches_the_worker_s_loader():
    from core.data.datasets import load_dataset

    served = load_dataset("fashion-mnist", "test", limit=500)
    assert (load_test_images("fashion-mnist")[:500] == served.images.numpy()).all()


def test_cifar10_s_test_batch_is_read_channel_first(tmp_path, monkeypatch):
    import pickle

    monkeypatch.setenv("STITCHLAB_HOME", str(tmp_path))
    assert attr.gallery_images("cifar10") is None  # not fetched yet: no gallery, the slider still works
    with pytest.raises(FileNotFoundError, match="CIFAR-10's test images are not in"):
        load_test_images("cifar10")
    rows = np.zeros((2, 3072), np.uint8)
    rows[1, :1024], rows[1, 1024:2048] = 200, 100  # CIFAR's rows: 1024 red, 1024 green, 1024 blue values
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": rows, "labels": [0, 1]}))
    images = load_test_images("cifar10")
    assert images.shape == (2, 3, 32, 32) and (images[1, :, 5, 7] == [200, 100, 0]).all()
    assert attr.gallery_images("folder:/somewhere") is None  # an image folder is decoded by the worker only


# -- the PNG ----------------------------------------------------------------------------------------

def test_the_figure_downloads_as_a_png(app_db, monkeypatch):
    drawn_on_click = {}
    add_deferred = MediaFileManager.add_deferred

    def keep(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        file_id = add_deferred(self, data_callable, mimetype, coordinates, file_name, **kwargs)
        drawn_on_click[file_id] = (data_callable, mimetype, file_name)
        return file_id

    monkeypatch.setattr(MediaFileManager, "add_deferred", keep)
    at = _attributions_page(attr_source="upload")
    at.file_uploader(key="attr_upload").upload("shirt.png", _png(_garment(light_on_black=True)), "image/png").run()
    at.selectbox(key="attr_method").set_value("saliency").run()  # the quickest method
    assert any("Computing the attributions" in i.value for i in at.info)
    from core import runs

    runs.serve(app_db, poll=0.01, idle_exit=0.05)  # the worker, here
    at.run()
    _no_trouble(at)
    button = at.get("download_button")[0]
    assert button.label == "Download the figure (PNG)"
    draw, mimetype, file_name = drawn_on_click[button.proto.deferred_file_id]
    data = draw()
    assert data.startswith(PNG_MAGIC) and mimetype == "image/png" and file_name == "attributions-saliency-upload.png"
    assert Image.open(io.BytesIO(data)).width >= 900  # 150 dpi: sharper than the page's 100-dpi figure


def test_presenter_mode_shows_no_thumbnails(app_db, scored):
    """Thumbnails are controls: on a slide they would push the figure off a 720-px screen."""
    at = _attributions_page(present="1")
    assert _shown_index(at) == 0
    assert not at.get("image") and not [b for b in at.button if (b.key or "").startswith("attr_pos_pick_")]


# -- polarity of an upload ------------------------------------------------------------------------

def _garment(light_on_black: bool) -> np.ndarray:
    """A 64 x 64 grey picture: a square garment in the middle, on a plain background."""
    picture = np.full((64, 64), 20 if light_on_black else 235, np.uint8)
    picture[16:48, 20:44] = 220 if light_on_black else 40
    return picture


def _png(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def _queued_pictures(db: Path) -> list[np.ndarray]:
    """The pixels of every upload queued for attributions, oldest first."""
    queued = sorted(jobs.list_jobs(Store(db), active_only=True), key=lambda j: j["id"])
    return [np.asarray(c["pixels"]) for j in queued if j["kind"] == "attributions" for c in j["params"]["configs"]]


def _polarity_warnings(at: AppTest) -> list[str]:
    return [w.value for w in at.warning if "looks dark on light" in w.value]


def test_a_light_background_upload_is_flagged_and_inverting_changes_the_request(app_db):
    at = _attributions_page(attr_source="upload")
    at.file_uploader(key="attr_upload").upload("photo.png", _png(_garment(light_on_black=False)), "image/png").run()
    _no_trouble(at)
    assert attr.POLARITY_NOTE in [c.value for c in at.caption]
    (warning,) = _polarity_warnings(at)
    assert "its border is brighter than its centre" in warning and "tick **Invert the picture**" in warning
    (as_uploaded,) = _queued_pictures(app_db)
    assert as_uploaded[0, 0, 0] == 235  # the light background, as it came
    at.checkbox(key="attr_invert").check().run()
    _no_trouble(at)
    (_, inverted) = _queued_pictures(app_db)
    assert (inverted == 255 - as_uploaded).all()  # the networks are asked about the negative
    assert not _polarity_warnings(at)


def test_a_light_on_black_upload_gets_the_note_but_no_warning(app_db):
    at = _attributions_page(attr_source="upload")
    at.file_uploader(key="attr_upload").upload("shirt.png", _png(_garment(light_on_black=True)), "image/png").run()
    assert attr.POLARITY_NOTE in [c.value for c in at.caption]
    assert not _polarity_warnings(at)
    at.checkbox(key="attr_invert").check().run()
    (warning,) = _polarity_warnings(at)  # inverted, it is the wrong way round
    assert "untick **Invert the picture**" in warning


def test_polarity_is_read_from_the_border_or_the_overall_brightness():
    dark = np.zeros((1, 32, 32), np.uint8)
    dark[:, 8:24, 8:24] = 200
    assert attr.looks_inverted(dark.tolist()) is None
    assert "border is brighter" in attr.looks_inverted((255 - dark).tolist())
    flat = np.full((1, 32, 32), 180, np.uint8)  # no background to compare: judged by brightness
    assert "mostly bright" in attr.looks_inverted(flat.tolist())
    assert attr.inverted([[[0, 255], [10, 200]]]) == [[[255, 0], [245, 55]]]
