"""Drawing, export and input checks without a server."""

import json
import os
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from demo.export import EXPORT_MAX_AGE_S, coco_annotation, export_root, prune_exports, write_exports
from demo.inputs import load_image, parse_box, parse_names
from kptllm.image import load_image as kptllm_load_image
from demo.presets import presets, skeleton_for
from demo.render import annotate


@pytest.mark.parametrize("size,colour", [((40, 30), (0, 0, 0)), ((640, 480), (255, 255, 255)), ((4000, 3000), (30, 30, 30))])
def test_annotate_any_size_light_and_dark(size, colour):
    image = Image.new("RGB", size, colour)
    w, h = size
    out = annotate(image, [(w * 0.3, h * 0.3), None, (w * 0.6, h * 0.7)], ["a", "b", "c"], [(0, 1), (0, 2)],
                   [(1, 1, w - 2, h - 2)], ["obj"])
    assert out.mode == "RGB" and min(out.size) >= min(512, min(size)) and out.size[0] / out.size[1] == pytest.approx(w / h, rel=0.02)
    assert np.asarray(out).std() > 1  # something was drawn


def test_load_image_modes(tmp_path):
    rgba = Image.new("RGBA", (20, 20), (255, 0, 0, 0))
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    deep = Image.fromarray(np.full((20, 20), 65535, dtype=np.uint16))
    assert load_image(deep).getpixel((0, 0)) == (255, 255, 255)
    exif_image = Image.new("RGB", (40, 20))
    exif = exif_image.getexif()
    exif[274] = 6  # rotated 90
    path = tmp_path / "rot.jpg"
    exif_image.save(path, exif=exif)
    assert load_image(str(path)).size == (20, 40)
    dark = Image.fromarray(np.full((20, 20), 200, dtype=np.uint16))  # 16-bit data that happens to be dark
    assert load_image(dark).getpixel((0, 0)) == kptllm_load_image(dark).getpixel((0, 0)) == (1, 1, 1)
    with pytest.raises(gr.Error):
        load_image(Image.new("RGB", (4, 4)))
    with pytest.raises(gr.Error):
        load_image(None)


def test_parse_box_and_names():
    image = Image.new("RGB", (100, 50))
    assert parse_box(" 1, 2, 3, 4 ", image) == (1, 2, 3, 4)
    assert parse_box("", image) is None
    for bad in ("1,2,3", "a,b,c,d", "1,2,-3,4", "200,2,3,4"):
        with pytest.raises(gr.Error):
            parse_box(bad, image)
    assert parse_names("nose, left eye") == ["nose", "left eye"]
    assert parse_names("the tip of the nose, roughly\nleft eye") == ["the tip of the nose, roughly", "left eye"]


def test_skeleton_for_presets():
    coco = next(p for k, p in presets().items() if k.startswith("COCO person"))
    assert len(skeleton_for(list(coco.names))) == len(coco.skeleton)
    assert skeleton_for(["nose", "left eye"]) == ((1, 0),) or skeleton_for(["nose", "left eye"]) == ((0, 1),)
    assert skeleton_for(["foo", "bar"]) == ()


def test_coco_annotation():
    results = [{"xy": (1.0, 2.0), "score": 0.9}, {"xy": None, "score": 0.0}, {"xy": (3.0, 4.0), "score": 0.1}]
    ann = coco_annotation(results, bbox=(0, 0, 5, 5), min_score=0.5)
    assert ann["keypoints"] == [1.0, 2.0, 2, 0, 0, 0, 0, 0, 0] and ann["num_keypoints"] == 1
    json.dumps(ann)


def test_exports_are_staged_per_request_and_stale_ones_pruned(tmp_path, monkeypatch):
    """Each request gets its own folder under the export root; a new request deletes folders older than
    EXPORT_MAX_AGE_S and nothing else (a demo serving for months must not fill the disk)."""
    monkeypatch.setenv("KPTLLM_EXPORT_DIR", str(tmp_path / "exports"))
    root = export_root()
    image = Image.new("RGB", (8, 8))
    first = write_exports(image, {"a": 1})
    second = write_exports(image, {"a": 2})
    folders = {Path(p).parent for p in first + second}
    assert len(folders) == 2 and all(f.parent == root for f in folders)
    assert json.loads(Path(second[1]).read_text()) == {"a": 2}

    stale = Path(first[0]).parent
    old = time.time() - EXPORT_MAX_AGE_S - 10
    os.utime(stale, (old, old))
    keeper = root / "notes.txt"  # not ours: left alone
    keeper.write_text("x")
    os.utime(keeper, (old, old))
    third = write_exports(image, {"a": 3})
    assert not stale.exists() and Path(second[0]).exists() and Path(third[0]).exists() and keeper.exists()

    monkeypatch.setenv("KPTLLM_EXPORT_DIR", str(keeper))  # a file, not a folder: named, with the setting to change
    with pytest.raises(ValueError, match="KPTLLM_EXPORT_DIR"):
        export_root()
    monkeypatch.setenv("KPTLLM_EXPORT_DIR", str(root))

    young = Path(second[0]).parent
    assert prune_exports(root, now=time.time() + EXPORT_MAX_AGE_S / 2) == 0 and young.exists()
    assert prune_exports(root, now=time.time() + EXPORT_MAX_AGE_S + 60) == 2 and not young.exists()


def test_refused_image_files_are_closed(tmp_path, monkeypatch):
    """A file refused for its size is closed again (a server would otherwise leak a handle per upload)."""
    import demo.inputs as inputs

    path = tmp_path / "big.png"
    Image.new("RGB", (40, 30)).save(path)
    opened = []
    real_open = Image.open

    def spy(*args, **kwargs):
        opened.append(real_open(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(inputs.Image, "open", spy)
    monkeypatch.setattr(inputs, "MAX_PIXELS", 100)
    with pytest.raises(gr.Error, match="megapixels"):
        load_image(str(path))
    assert opened and all(image.fp is None or image.fp.closed for image in opened)


def test_download_detector_fetches_the_detector_the_app_was_asked_for(monkeypatch):
    """`python app.py --detector other/id` with no local copy: *Download detector* must fetch other/id, not the default."""
    from demo.tabs import wild

    asked = []

    def fake_from_pretrained(source, device=None, local_files_only=False):
        asked.append((source, local_files_only))
        return "detector"

    monkeypatch.setattr(wild.GroundingDinoDetector, "from_pretrained", staticmethod(fake_from_pretrained))
    holder = wild.DetectorHolder(None, "unavailable", "other/id")
    assert "`other/id`" in wild.download_detector(holder, "cpu") and holder.detector == "detector"
    assert asked == [("other/id", False)]
    assert wild.DetectorHolder(None, "unavailable").source == wild.DEFAULT_DETECTOR
