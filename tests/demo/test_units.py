"""Drawing, export and input checks without a server."""

import json
import os
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from demo.benchmarks import RESULTS_DIR as ROOT_RESULTS
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
    from demo.boxes import Detectors
    from demo.tabs import wild

    asked = []

    def fake_from_pretrained(source, device=None, local_files_only=False):
        asked.append((source, local_files_only))
        return "detector"

    monkeypatch.setattr(wild.GroundingDinoDetector, "from_pretrained", staticmethod(fake_from_pretrained))
    monkeypatch.setattr(wild, "hub_reachable", lambda: True)
    detectors = Detectors(None, None, "unavailable", "other/id")
    assert "`other/id`" in wild.download_detector(detectors, "cpu") and detectors.open == "detector"
    assert asked == [("other/id", False)]
    default = Detectors(None, None, "unavailable")
    wild.download_detector(default, "cpu")
    assert asked[-1] == (wild.DEFAULT_DETECTOR, False)


def test_download_detector_offline_fails_at_once_with_one_sentence(monkeypatch):
    """Offline, *Download detector* must not spin through the hub client's retries: a 5 s reachability probe
    decides, and the hub is never asked."""
    import socket

    from demo.boxes import Detectors
    from demo.tabs import wild

    def never(*args, **kwargs):
        raise AssertionError("the hub was asked although it cannot be reached")

    monkeypatch.setattr(wild.GroundingDinoDetector, "from_pretrained", staticmethod(never))
    holder = Detectors(None, None, "unavailable", "other/id")
    with pytest.raises(gr.Error, match="cannot reach the Hugging Face hub"):  # HF_HUB_OFFLINE=1 (tests set it)
        wild.download_detector(holder, "cpu")
    # online as far as the environment says, but nothing answers: a closed local port stands for the hub
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{port}")
    probes = []
    real = socket.create_connection
    monkeypatch.setattr(socket, "create_connection", lambda address, timeout=None: probes.append(timeout) or real(address, timeout=timeout))
    with pytest.raises(gr.Error, match="cannot reach the Hugging Face hub") as info:
        wild.download_detector(holder, "cpu")
    assert probes and probes[0] <= 5 and "Traceback" not in str(info.value)


# --------------------------------------------------------------------------- labels that stay readable
def _check_placements(points, places, sizes, image_size, gap):
    from demo.render import _covers, _overlaps

    boxes = [p[1] for p in places if p is not None]
    for place, options in zip(places, sizes):
        if place is None:
            continue
        option, (x1, y1, x2, y2) = place
        assert (x2 - x1, y2 - y1) == pytest.approx(options[option])
        assert 0 <= x1 and 0 <= y1 and x2 <= image_size[0] and y2 <= image_size[1]  # inside the image
    assert not any(_overlaps(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])  # no two overlap
    assert not any(_covers(b, q, gap / 2 - 1e-6) for b in boxes for q in points if q is not None)  # no point hidden


@pytest.mark.parametrize("count", [1, 17, 34, 50])
def test_labels_never_overlap_cover_a_point_or_leave_the_image(count):
    """Two people's worth of keypoints (and more) packed into a small image: every label that is drawn sits
    beside its point, inside the image, over no point and no other label; the rest fall back to numbers."""
    from demo.render import place_labels

    rng = np.random.default_rng(count)
    image_size, gap = (300, 200), 6.0
    points = [tuple(p) for p in rng.uniform([0, 0], image_size, (count, 2))] + [None]
    sizes = [[(70.0, 14.0), (14.0, 14.0)] for _ in points]
    places = place_labels(points, sizes, image_size, gap)
    _check_placements(points, places, sizes, image_size, gap)
    assert places[-1] is None and places[0] is not None
    if count == 1:
        assert places[0][0] == 0  # alone: the full name fits


def test_a_label_at_the_right_edge_goes_to_the_left_of_its_point():
    from demo.render import place_labels

    ((option, (x1, y1, x2, y2)),) = place_labels([(295.0, 100.0)], [[(60.0, 12.0)]], (300, 200), 5.0)
    assert x2 <= 295 - 5 and y1 < 100 < y2


def test_drawn_labels_leave_the_point_itself_visible():
    """The point's own colour stays at its centre (a label box drawn over it would cover it)."""
    from demo.render import annotate, palette

    image = Image.new("RGB", (600, 400), (255, 255, 255))
    points = [(300.0, 200.0), (330.0, 204.0), (270.0, 196.0)]  # labels wider than the gaps
    out = np.asarray(annotate(image, points, ["1 left ear", "2 right ear", "3 nose"], min_side=0))
    for k, (x, y) in enumerate(points):
        colour = palette(len(points))[k]
        assert tuple(out[round(y), round(x)]) == (colour.r, colour.g, colour.b)


# --------------------------------------------------------------------------- plain, safe errors
def test_refusals_are_text_and_one_log_line(caplog):
    from demo.inputs import refuse

    with caplog.at_level("INFO", logger="kptllm.demo"):
        error = refuse("The box '<a href=\"https://evil.example\">click</a>' is wrong.")
    assert "<a" not in error.message and "&lt;a href" in error.message
    assert error.print_exception is False
    assert [r.getMessage() for r in caplog.records] == ["refused: The box '<a href=\"https://evil.example\">click</a>' is wrong."]


def test_a_file_that_is_not_an_image_gets_one_plain_sentence(tmp_path):
    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is a text file, not a photo")
    with pytest.raises(gr.Error) as info:
        load_image(str(fake), "support image 2")
    message = info.value.message
    assert message.startswith("The support image 2 is not an image file") and str(tmp_path) not in message
    truncated = tmp_path / "cut.png"
    buffer = tmp_path / "full.png"
    Image.new("RGB", (64, 64), (9, 9, 9)).save(buffer)
    truncated.write_bytes(buffer.read_bytes()[:60])
    with pytest.raises(gr.Error, match="could not be decoded|not an image file"):
        load_image(str(truncated))


def test_huge_images_are_refused_from_the_header_before_decoding(tmp_path, monkeypatch):
    import demo.inputs as inputs

    path = tmp_path / "huge.png"
    Image.new("1", (9000, 5000)).save(path)  # 45 Mpx, a few kB on disk
    monkeypatch.setattr(inputs, "library_load_image", lambda *a, **k: pytest.fail("the image was decoded"))
    with pytest.raises(gr.Error, match="9000x5000 pixels; the limit is 40 megapixels"):
        load_image(str(path))


def test_refusing_a_huge_image_costs_little_memory(tmp_path):
    """In a fresh process: the peak memory of refusing a 12000 x 12000 PNG (decoded, 432 MB as RGB)."""
    import subprocess
    import sys

    path = tmp_path / "huge.png"
    Image.new("1", (12000, 12000)).save(path)
    script = (
        "import resource, gradio as gr\n"
        "from demo.inputs import load_image\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"try:\n    load_image({str(path)!r})\nexcept gr.Error as e:\n    print('refused', e.message)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[2]).stdout.split("\n")
    assert out[0].startswith("refused") and "megapixels" in out[0]
    assert int(out[1]) < 50, f"refusing cost {out[1]} MB"


# --------------------------------------------------------------------------- marks on the supports
def test_a_marked_support_is_the_original_size_and_reads_back_to_the_original(tmp_path, monkeypatch):
    from demo import shown
    from demo.shown import original_of
    from demo.tabs import visual

    monkeypatch.setenv("KPTLLM_EXPORT_DIR", str(tmp_path / "exports"))
    original = tmp_path / "support.png"
    Image.new("RGB", (150, 90), (250, 250, 250)).save(original)
    rows = [{"support": 1, "keypoint": 1, "x": 40.0, "y": 30.0, "name": ""},
            {"support": 1, "keypoint": 2, "x": 100.0, "y": 60.0, "name": "nose"}]
    marked = visual.marked_support(str(original), rows, 1)
    with Image.open(marked) as displayed:
        assert displayed.size == (150, 90)  # a click on it lands in the original's pixels
        pixels = np.asarray(displayed.convert("RGB"))
    assert (pixels[30, 40] != 250).any() and (pixels[60, 100] != 250).any()  # a mark where each point is
    assert original_of(marked) == str(original)  # the model gets the unmarked image
    assert original_of(str(original)) == str(original)
    assert load_image(marked).getpixel((40, 30)) == (250, 250, 250)  # every handler reads through load_image
    # a PNG that names another file without our signature is taken as it is
    forged = tmp_path / "forged.png"
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(shown._ORIGIN_KEY, f"{original}|0000")
    Image.new("RGB", (10, 10)).save(forged, pnginfo=info)
    assert original_of(str(forged)) == str(forged)


def test_show_marks_redraws_only_supports_that_change(tmp_path, monkeypatch):
    from demo.tabs import visual

    monkeypatch.setenv("KPTLLM_EXPORT_DIR", str(tmp_path / "exports"))
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    Image.new("RGB", (50, 40)).save(one)
    Image.new("RGB", (60, 40)).save(two)
    table = [[1, 1, 10.0, 10.0, ""]]
    out = visual.show_marks(str(one), str(two), None, None, None, table)
    assert Path(out[0]).name == "support-1-marked.png" and all(o == gr.skip() for o in out[1:])
    cleared = visual.show_marks(out[0], str(two), None, None, None, [])  # marks removed: back to the original
    assert cleared[0] == str(one)


# --------------------------------------------------------------------------- exports say what was asked
def test_typed_names_over_a_preset_are_a_custom_category():
    from demo.presets import category_of, preset_used

    quadruped = next(k for k in presets() if k.startswith("KeypointWorld quadruped"))
    assert preset_used(quadruped, list(presets()[quadruped].names[:3])) == quadruped
    assert preset_used(quadruped, list(presets()[quadruped].descriptions[:2])) == quadruped
    assert preset_used(quadruped, ["left eye", "chin"]) is None
    assert category_of(quadruped) == "KeypointWorld quadruped" and category_of(None) is None


def test_export_names_the_image_and_states_the_png_scale():
    from demo.export import export_json
    from demo.views import Outcome, export_stem, present

    image = Image.new("RGB", (100, 80))
    outcome = Outcome("text", image, [{"bbox": None, "results": [{"xy": (10.0, 20.0), "score": 0.9, "parsed": True,
                                                                   "text": "nose", "query": "nose"}]}], ["nose"],
                      prompt={"task": "text", "preset": None, "category": None}, model="kptllm-keypointworld (embedded)",
                      file_name="My dog (1).jpg")
    assert export_stem(outcome) == "kptllm-text-My_dog_1"
    annotated, _, png, js = present(outcome, 0.0)
    payload = json.loads(Path(js).read_text())
    assert Path(png).name == "kptllm-text-My_dog_1.png" and payload["images"][0]["file_name"] == "My dog (1).jpg"
    assert payload["categories"][0]["name"] == "custom"
    scale = payload["annotated_png"]["scale"]
    assert annotated.size == (payload["annotated_png"]["width"], payload["annotated_png"]["height"]) and scale == pytest.approx(512 / 80)
    assert export_json("text", {}, image, [], [], (), "m")["images"][0]["file_name"] == "image.png"


def test_public_paths_name_no_server_folder():
    from demo.benchmarks import ROOT, public_path
    from demo.model import public_model_name

    assert public_path(str(ROOT / "assets" / "kptllm-keypointworld")) == "assets/kptllm-keypointworld"
    assert public_path("/tmp/kw-held/annotations.json") == "kw-held/annotations.json"
    assert public_path("relative/thing") == "relative/thing" and public_path(None) is None
    assert public_model_name(None) == "kptllm-keypointworld (embedded)"
    assert public_model_name("/srv/models/my-model") == "my-model" and public_model_name("org/model") == "org/model"


def test_training_charts_keep_loss_and_validation_rows_apart():
    """metrics.jsonl mixes loss rows and held-out validation rows (no loss): the loss line must not break on
    them, and the validation chart shows exactly the validation rows."""
    import pandas as pd

    from demo.tabs.benchmarks import curve_chart, validation_chart

    curve = pd.DataFrame([{"step": 5, "loss": 0.6, "lr": 1e-4, "elapsed": 10.0, "stage": 1},
                          {"step": 10, "loss": 0.5, "lr": 1e-4, "elapsed": 20.0, "stage": 1},
                          {"step": 10, "elapsed": 20.0, "stage": 1,
                           "validation": {"seed": 900001, "text_pck@0.2": 0.9, "visual_pck@0.2": 0.7, "semantic_accuracy": 0.6}},
                          {"step": 15, "loss": 0.4, "lr": 1e-4, "elapsed": 30.0, "stage": 2}])
    loss = curve_chart(curve)
    assert sorted(x for trace in loss.data for x in trace.x) == [5, 10, 15]
    assert all(y == y for trace in loss.data for y in trace.y)  # no NaN in the loss line
    validation = validation_chart(curve)
    assert {trace.name: list(trace.y) for trace in validation.data} == {
        "text PCK@0.2": [0.9], "visual 1-shot PCK@0.2": [0.7], "semantic accuracy": [0.6]}
    assert [list(c) for c in validation.data[0].customdata] == [[900001, "lossless"]]  # rows before JPEG validation
    jpeg = curve.copy()
    jpeg.at[2, "validation"] = {**curve.at[2, "validation"], "jpeg_quality": 95}
    assert [list(c) for c in validation_chart(jpeg).data[0].customdata] == [[900001, "JPEG 95"]]
    assert "No held-out" in validation_chart(curve.drop(columns="validation")).layout.title.text


def test_the_note_under_a_result_says_what_the_model_looked_at():
    from demo.views import Outcome, looked_at

    whole = Outcome("text", Image.new("RGB", (10, 10)), [{"bbox": None, "results": []}], [])
    boxed = Outcome("text", Image.new("RGB", (10, 10)), [{"bbox": (1, 2, 3.5, 4), "results": []}], [])
    assert "whole image" in looked_at(whole) and "one object per box" in looked_at(whole)
    assert "box x 1, y 2, width 3.5, height 4" in looked_at(boxed) and looked_at(None) == gr.skip()


def test_two_corner_clicks_make_a_box_in_the_originals_pixels(tmp_path, monkeypatch):
    from demo import clickbox
    from demo.shown import original_of

    monkeypatch.setenv("KPTLLM_EXPORT_DIR", str(tmp_path / "exports"))
    photo = tmp_path / "photo.png"
    Image.new("RGB", (200, 100), (255, 255, 255)).save(photo)

    def click(x, y):
        return gr.SelectData(None, {"index": [x, y], "value": None})

    text, corner, shown = clickbox.corner_click(str(photo), "", None, click(150, 80))
    assert text == gr.skip() and corner == [150.0, 80.0] and original_of(shown) == str(photo)
    text, corner, shown = clickbox.corner_click(shown, "", corner, click(40.25, 10))  # any two opposite corners
    assert text == "40.2,10,109.8,70" and corner is None
    drawn = np.asarray(Image.open(shown).convert("RGB"))
    assert drawn.shape[:2] == (100, 200) and (drawn[10, 100] != 255).any() and (drawn[50, 100] == 255).all()
    # a second click on the first corner starts over there; with many boxes each closed box adds a line
    assert clickbox.corner_click(shown, text, [30, 30], click(30.5, 30))[:2] == (gr.skip(), [30.5, 30.0])
    many = clickbox.corner_click(str(photo), "1,1,5,5\n2,2,5,5", [0, 0], click(10, 20), many=2)[0]
    assert many == "2,2,5,5\n0,0,10,20"
    with pytest.raises(gr.Error, match="Upload an image first"):
        clickbox.corner_click(None, "", None, click(1, 1))
    assert clickbox.show_typed(str(photo), "not a box")[0] == gr.skip()
    assert original_of(clickbox.show_typed(str(photo), "10,10,50,50")[0]) == str(photo)
    assert clickbox.show_typed(str(photo), "")[0] == str(photo)  # no box: the plain image again


def test_the_chart_says_when_it_is_cut_and_keeps_legends_short():
    import pandas as pd

    from demo.tabs.benchmarks import LEGEND_CHARS, MAX_BARS, bar_chart

    rows = pd.DataFrame({"dataset": [f"d{k}" for k in range(MAX_BARS + 29)], "setting": "s", "metric": "PCK@0.2",
                         "value": 50.0, "source": "measured", "task": "text_prompt",
                         "method": "a measured run with a very long name indeed 3e6470cf"})
    cut = bar_chart(rows)
    assert cut.layout.title.text.startswith(f"First {MAX_BARS} of {MAX_BARS + 29} values")
    assert all(len(trace.name.split(", ")[0]) <= LEGEND_CHARS for trace in cut.data)  # "name, source"
    assert bar_chart(rows.head(5)).layout.title.text.startswith("All 5 values")


def test_the_chart_has_one_level_readable_bar_per_row_in_the_table_s_order():
    """Horizontal bars (labels never rotated), a label per row that names the method and what tells rows apart
    (two rows of one method on one dataset that differ only in setting get their own bars), lines not longer
    than about LABEL_CHARS, and a height that grows with the rows."""
    import pandas as pd

    from demo.tabs.benchmarks import LABEL_CHARS, bar_chart

    rows = pd.DataFrame({"method": ["KptLLM"] * 3 + ["kptllm-keypointworld 0c0f864f (decision/keypointworld-text)"],
                         "dataset": ["MP-100", "MP-100", "MP-100", "KeypointWorld test set, seed 271828, off-centre"],
                         "setting": ["1-shot split1", "5-shot split1", "5-shot split1", "1-shot, boxes by the embedded detector"],
                         "metric": "PCK@0.2", "value": [70.0, 75.0, 76.0, 80.0], "source": "paper", "task": "t"})
    figure = bar_chart(rows)
    assert {trace.orientation for trace in figure.data} == {"h"}
    labels = list(figure.layout.yaxis.categoryarray)[::-1]  # Plotly lists them from the bottom: the table's order from the top
    assert sorted(labels) == sorted(y for trace in figure.data for y in trace.y) and len(set(labels)) == 4
    assert "1-shot split1" in labels[0] and "5-shot split1" in labels[1] and labels[2].endswith("(2)")
    assert "PCK@0.2" in labels[3] and "boxes by the embedded detector" in labels[3].replace("<br>", " ")
    lines = [line.replace("<b>", "").replace("</b>", "") for label in labels for line in label.split("<br>")]
    assert max(len(line) for line in lines) <= LABEL_CHARS + 2
    assert bar_chart(rows).layout.height < bar_chart(pd.concat([rows] * 5)).layout.height


def test_the_benchmarks_tab_opens_on_the_measured_records_beside_the_paper_s_own_methods():
    """Not the first 60 paper rows: every shipped record's headline next to KptLLM / KptLLM++ on its task."""
    from demo.benchmarks import ROOT, default_view, filter_table, load_results
    from demo.tabs.benchmarks import MAX_BARS

    table = load_results()
    view = default_view(table)
    rows = filter_table(table, view["tasks"], [], view["metrics"], view["methods"])
    measured = rows[rows["source"] == "measured"]
    # the detector's box AP and the chain ("boxes by the embedded detector") are shipped records too (issue 27)
    assert set(measured["task"]) == {"text_prompt", "visual_prompt", "semantic_understanding", "object_detection"}
    assert len(measured) == len(list((ROOT / "results").rglob("keypointworld-*/record.json"))) and len(rows) <= MAX_BARS
    assert set(measured.loc[measured["task"] == "object_detection", "metric"]) == {"AP"}
    assert {"KptLLM", "KptLLM++"} == set(rows.loc[rows["source"] == "paper", "method"])
    assert set(rows["metric"]) == {"PCK@0.2", "accuracy", "AP"}


def test_measured_rows_come_first_in_the_table_and_the_chart():
    from demo.benchmarks import default_view, load_results
    from demo.tabs.benchmarks import filtered

    view = default_view(load_results())
    rows, chart, _ = filtered(view["tasks"], [], view["metrics"], view["methods"], ["paper", "measured"])
    sources = list(rows["source"])
    assert sources == sorted(sources, key=lambda s: s != "measured") and sources[0] == "measured"
    assert chart.data[0].name.startswith("kptllm-keypointworld")


def test_the_drag_script_parses_and_knows_every_box_field(tmp_path):
    """A syntax error there blanks the whole page (every browser test would time out): checked with node when
    it is installed; and every image that takes a box by drag is registered with its field."""
    import shutil
    import subprocess

    from demo import clickbox
    from demo.app import build_demo
    from demo.model import load_model

    build_demo(load_model(None, device="cpu"))
    assert {"text-image": ("text-bbox", "replace"), "wild-image": ("wild-boxes", "append:10"),
            "vis-query": ("vis-bbox", "replace"), "vis-support-2": ("vis-support-boxes", "line:2"),
            "sem-image": ("sem-bbox", "replace")}.items() <= clickbox.DRAGGABLE.items()
    if not shutil.which("node"):
        pytest.skip("node is not installed: the browser tests check the script")
    script = tmp_path / "drag.js"
    script.write_text("const f = " + clickbox.drag_script() + ";\n")
    subprocess.run(["node", "--check", str(script)], check=True, capture_output=True)


def test_a_record_whose_data_is_gone_is_refused_without_server_paths(tmp_path, monkeypatch):
    """The gallery of a user's record whose annotation file is not here: one sentence naming the file by its
    last parts, not the server's path."""
    import json
    import shutil

    import gradio as gr

    from demo import benchmarks
    from demo.tabs import gallery

    shipped = ROOT_RESULTS / "decision" / "keypointworld-text"
    mine = tmp_path / "results" / "mp100-mine"
    shutil.copytree(shipped, mine)
    record = json.loads((mine / "record.json").read_text())
    record.update(annotations="/srv/private/data/mp100_split1_test.json", annotations_description=None)
    (mine / "record.json").write_text(json.dumps(record))
    monkeypatch.setattr(benchmarks, "RESULTS_DIR", tmp_path / "results")
    assert gallery.record_folders() == ["mp100-mine"]
    with pytest.raises(gr.Error) as refused:
        gallery.show("mp100-mine")
    assert "data/mp100_split1_test.json is not here" in refused.value.message
    assert "/srv" not in refused.value.message


def test_the_share_icon_is_offered_only_on_spaces(monkeypatch):
    from demo.views import image_buttons

    monkeypatch.delenv("SPACE_ID", raising=False)
    assert "share" not in image_buttons() and "download" in image_buttons()
    monkeypatch.setenv("SPACE_ID", "someone/kptllm")
    assert "share" in image_buttons()


def test_the_queue_size_comes_from_the_environment_or_the_documented_default(monkeypatch):
    from demo.app import QUEUE_SIZE, queue_size_from_env

    monkeypatch.delenv("KPTLLM_QUEUE_SIZE", raising=False)
    assert queue_size_from_env() == QUEUE_SIZE
    monkeypatch.setenv("KPTLLM_QUEUE_SIZE", "5")
    assert queue_size_from_env() == 5
    for bad in ("0", "-3", "many"):
        monkeypatch.setenv("KPTLLM_QUEUE_SIZE", bad)
        with pytest.raises(SystemExit, match="KPTLLM_QUEUE_SIZE"):
            queue_size_from_env()


def test_the_server_limits_glibc_s_malloc_arenas_unless_told_otherwise(monkeypatch):
    import sys

    from demo.app import limit_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False  # the operator's setting wins
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    assert limit_malloc_arenas() is sys.platform.startswith("linux")
