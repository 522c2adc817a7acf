"""The app through gradio_client: every task endpoint with real images, errors, concurrency, sessions."""

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from demo.benchmarks import RESULTS_DIR, breakdowns, semantic_errors
from tests.demo.conftest import EXAMPLES, OUTBOUND

PERSON = str(EXAMPLES / "keypointworld_person.jpg")
PERSON_BOX = "63,136,84,96"
PRESET = "KeypointWorld person (17)"


def _direct(loaded, image, bbox, names):
    with loaded.lock:
        loaded.predictor.set_image(image, bbox=bbox)
        out = loaded.predictor.detect(names)
        loaded.predictor.reset_image()
    return out


def _table(value):
    return value["data"] if isinstance(value, dict) else value


def test_api_names(client):
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/describe", "/detect_text", "/detect_visual", "/detect_wild", "/benchmarks",
            "/benchmarks_side_by_side", "/benchmarks_breakdown", "/visual_undo", "/visual_clear"} <= names


def test_no_outbound_network(app):
    assert OUTBOUND == []


def test_page_names_the_model(app):
    _, loaded, _ = app
    assert "KeypointWorld" in loaded.summary and "not real photographs" in loaded.summary
    # the header is the card's first paragraph, one or two sentences, and links the card folded under it
    first = loaded.summary.split(" — ", 1)[1].split(" ([model card]")[0]
    assert first.count(". ") + 1 <= 2 and len(first) < 400, first
    assert "([model card](#model-card))" in loaded.summary
    config = httpx.get(app[0] + "config", timeout=30).json()
    assert any(c.get("props", {}).get("elem_id") == "model-card" for c in config["components"])
    assert "## History" in loaded.card
    props = {c.get("props", {}).get("elem_id"): c.get("props", {}) for c in config["components"]}
    assert all("share" not in props[e]["buttons"] for e in ("sem-result", "text-result", "vis-result", "wild-result"))
    assert "outside what it knows" in props["wild-scope"]["value"]  # In the wild says it under the image


def test_detect_text_matches_predictor_and_exports(app, client):
    names = ["nose", "left shoulder", "right knee"]
    image, table, png, js, box, shown = client.predict(handle_file(PERSON), PRESET, "\n".join(names), False, PERSON_BOX,
                                                       0.0, api_name="/detect_text")
    direct = _direct(app[1], Image.open(PERSON), (63, 136, 84, 96), names)
    rows = _table(table)
    assert [r[2] for r in rows] == names
    for row, d in zip(rows, direct):
        assert row[3] == pytest.approx(round(d.xy[0], 1)) and row[4] == pytest.approx(round(d.xy[1], 1))
    assert Image.open(png).format == "PNG" and Image.open(image).size[0] >= 512
    payload = json.loads(open(js).read())
    assert payload["prompt"]["keypoints"] == names and payload["prompt"]["bbox"] == [63, 136, 84, 96]
    kp = payload["annotations"][0]["keypoints"]
    assert len(kp) == 3 * len(names) and kp[0] == pytest.approx(round(direct[0].xy[0], 2))
    assert payload["categories"][0]["keypoints"] == names


def test_downloads_outlive_the_staging_folder(app, demo_exports):
    """Gradio serves a download from its own cache, so pruning our staging copies breaks no link; and the app
    prunes Gradio's cache too."""
    from demo.app import GRADIO_CACHE_PRUNE
    from demo.export import prune_exports

    raw = Client(app[0], verbose=False, download_files=False)
    _, _, png, js, *_ = raw.predict(handle_file(PERSON), PRESET, "nose", False, PERSON_BOX, 0.0, api_name="/detect_text")
    served = Path(png["path"])
    assert demo_exports not in served.parents and served.name == "kptllm-text-keypointworld_person.png"
    staged = list(demo_exports.glob("request-*/kptllm-text-keypointworld_person.png"))
    assert staged, "the export was not staged under KPTLLM_EXPORT_DIR"
    prune_exports(demo_exports, max_age_s=-1)
    assert not list(demo_exports.glob("request-*"))
    response = httpx.get(png["url"], timeout=30)
    assert response.status_code == 200 and response.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert app[2].delete_cache == GRADIO_CACHE_PRUNE


def test_describe(client, examples):
    x, y, _ = examples[0]["keypointworld_person.jpg"]["keypoints"][5]
    image, answer, png, js, *_ = client.predict(handle_file(PERSON), x, y, PERSON_BOX, api_name="/describe")
    payload = json.loads(open(js).read())
    assert payload["task"] == "semantic" and payload["prompt"]["point"] == [x, y]
    assert answer.startswith("### ")


def test_detect_visual(client, examples):
    support = examples[1]["keypointworld_support_person.jpg"]
    points = {"headers": ["support", "keypoint", "x", "y", "name"],
              "data": [[1, k + 1, x, y, ""] for k, (x, y) in enumerate(support["keypoints"][:3])]}
    box = ",".join(f"{v:g}" for v in support["bbox"])
    image, table, png, js, *_ = client.predict(
        handle_file(PERSON), handle_file(str(EXAMPLES / "keypointworld_support_person.jpg")), None, None, None, None,
        points, box, PERSON_BOX, 0.0, api_name="/detect_visual")
    rows = _table(table)
    assert len(rows) == 3 and all(r[3] is not None for r in rows if r[5] > 0)
    payload = json.loads(open(js).read())
    assert payload["prompt"]["supports"] == 1 and len(payload["prompt"]["support_points"][0]) == 3


def test_wild_tiny_detector_end_to_end(app, client):
    """boxes (tiny random GroundingDINO) -> crops -> keypoints in pixels of the original image."""
    image, table, png, js = client.predict(handle_file(PERSON), "person.", PRESET, "nose\nleft knee", 0.0, 0.0, "",
                                           0.0, "GroundingDINO", api_name="/detect_wild")
    payload = json.loads(open(js).read())
    assert payload["prompt"]["boxes_from"].startswith("GroundingDINO detector")
    assert payload["prompt"]["objects"] == "person." and payload["prompt"]["box_threshold"] == 0.0
    loaded = app[1]
    for instance in payload["results"][:2]:
        direct = _direct(loaded, Image.open(PERSON), tuple(instance["bbox"]), ["nose", "left knee"])
        for got, want in zip(instance["keypoints"], direct):
            assert (got["xy"] is None) == (want.xy is None)
            if want.xy is not None:
                assert got["xy"] == pytest.approx(list(want.xy), abs=1e-3)


def test_wild_typed_boxes(client):
    _, table, _, js = client.predict(handle_file(PERSON), "", PRESET, "nose", 0.35, 0.25, PERSON_BOX, 0.0,
                                     api_name="/detect_wild")
    payload = json.loads(open(js).read())
    assert payload["annotations"][0]["bbox"] == [63, 136, 84, 96]
    # the detector never ran: its query and thresholds are not part of this result's prompt
    assert payload["prompt"]["boxes_from"] == "typed boxes"
    assert not {"objects", "box_threshold", "text_threshold"} & set(payload["prompt"])


BAD = [
    ("/detect_text", lambda: (None, PRESET, "nose", False, "", 0.0), "upload"),
    ("/detect_text", lambda: (handle_file(PERSON), PRESET, "nose", False, "1,2,3", 0.0), "four numbers"),
    ("/detect_text", lambda: (handle_file(PERSON), PRESET, "\n".join(f"k{i}" for i in range(60)), False, "", 0.0), "allows"),
    ("/detect_text", lambda: (handle_file(PERSON), PRESET, "x" * 400, False, "", 0.0), "limit"),
    ("/detect_text", lambda: (handle_file(PERSON), PRESET, "nose", False, "900,900,10,10", 0.0), "outside"),
    ("/detect_text", lambda: (handle_file(PERSON), PRESET, "nose", False, "0,0,3e6,3e6", 0.0), "20 times"),
    ("/detect_text", lambda: (handle_file(PERSON), PRESET, "nose", False, "0,0,1e999,10", 0.0), "finite"),
    ("/detect_text", lambda: (handle_file(PERSON), PRESET, "y" * 201, False, "", 0.0), "limit is 200"),
    ("/describe", lambda: (handle_file(PERSON), 5000, 10, ""), "outside"),
    ("/detect_visual", lambda: (handle_file(PERSON), handle_file(PERSON), handle_file(PERSON), None, None, None,
                                {"headers": ["support", "keypoint", "x", "y", "name"], "data": [[1, 1, 10, 10, ""]]},
                                "", "", 0.0), "no points"),
    ("/detect_wild", lambda: (handle_file(PERSON), "", PRESET, "nose", 0.3, 0.25, "", 0.0), "objects"),
    # under the 2,000-character limit but past the detector's text length (32 tokens for the tiny one, 256 for GroundingDINO)
    ("/detect_wild", lambda: (handle_file(PERSON), "person. " * 40, PRESET, "nose", 0.3, 0.25, "", 0.0, "GroundingDINO"),
     "reads at most 32"),
    ("/detect_wild", lambda: (handle_file(PERSON), "giraffe.", PRESET, "nose", 0.3, 0.25, "", 0.0, "embedded"),
     "does not know 'giraffe'"),
]


@pytest.mark.parametrize("endpoint,args,message", BAD, ids=[f"{e}-{m}" for e, _, m in BAD])
def test_bad_input_is_a_clear_error(client, endpoint, args, message):
    with pytest.raises(Exception) as info:
        client.predict(*args(), api_name=endpoint)
    assert message.lower() in str(info.value).lower()


def test_serving_after_errors_and_concurrent_requests_agree(app, client):
    names = ["nose", "left eye", "right eye", "left shoulder", "right shoulder", "left hip", "right hip", "left knee"]
    url = app[0]

    def one(name):
        c = Client(url, verbose=False)
        return c.predict(handle_file(PERSON), PRESET, name, False, PERSON_BOX, 0.0, api_name="/detect_text")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, names))
    for name, (_, table, *_) in zip(names, answers):
        (direct,) = _direct(app[1], Image.open(PERSON), (63, 136, 84, 96), [name])
        row = _table(table)[0]
        assert row[2] == name and row[3] == pytest.approx(round(direct.xy[0], 1))


def test_sessions_do_not_share_state(app, client):
    client.predict(handle_file(PERSON), PRESET, "nose", False, PERSON_BOX, 0.0, api_name="/detect_text")
    other = Client(app[0], verbose=False)
    result = other.predict(0.5, api_name="/text_redraw")  # nothing detected in this session: nothing to redraw
    assert result[0] is None or result[0] == {"__type__": "update"}  # unchanged, never the other session's image


def test_odd_images(client, tmp_path):
    rng = np.random.default_rng(0)
    files = {
        "gray.png": Image.fromarray(rng.integers(0, 255, (120, 90), dtype=np.uint8), "L"),
        "rgba.png": Image.fromarray(rng.integers(0, 255, (80, 100, 4), dtype=np.uint8), "RGBA"),
        "deep.png": Image.fromarray(rng.integers(0, 65535, (64, 64), dtype=np.uint16)),
        "tiny.png": Image.new("RGB", (9, 9), (200, 10, 10)),
    }
    for name, image in files.items():
        path = tmp_path / name
        image.save(path)
        _, table, *_ = client.predict(handle_file(str(path)), PRESET, "nose", False, "", 0.0, api_name="/detect_text")
        assert len(_table(table)) == 1, name


def test_benchmarks_endpoints(client):
    rows, chart, csv = client.predict(["visual_prompt"], [], ["PCK@0.2"], [], ["paper", "measured"], api_name="/benchmarks")
    data = _table(rows)
    assert data and open(csv).read().startswith("source,task")
    wide = client.predict(["KptLLM", "KptLLM++"], [], [], [], api_name="/benchmarks_side_by_side")
    assert {"KptLLM", "KptLLM++"} <= set(wide["headers"])
    with pytest.raises(Exception, match="2 or 3"):
        client.predict(["KptLLM"], [], [], [], api_name="/benchmarks_side_by_side")


def test_benchmarks_breakdown_of_a_semantic_record(client):
    record = "decision/keypointworld-semantic/record.json"  # records are named relative to results/ (no server paths)
    categories, keypoints, _, kinds, confusions = client.predict(record, api_name="/benchmarks_breakdown")
    assert {row[0] for row in _table(categories)} >= {"person", "quadruped", "face"}
    assert len(_table(keypoints)) > 17
    shares = dict(_table(kinds))
    assert set(shares) == {"correct", "mirror", "front/back", "other", "unparsed"}
    assert sum(shares.values()) == pytest.approx(100, abs=0.1)
    category, expected, predicted, count = _table(confusions)[0]
    assert category in {"person", "quadruped", "face", "car", "chair"} and expected != predicted and count >= 1


def test_breakdown_of_a_visual_record_keeps_counts_and_charts_the_headline():
    """Counts (`queries`) stay counts, metric values become percent, and the chart shows the record's headline."""
    from demo.tabs.benchmarks import breakdown

    path = RESULTS_DIR / "decision/keypointworld-visual" / "record.json"
    record = json.loads(path.read_text())
    categories, *_ = breakdowns(str(path))
    for row in categories.to_dict("records"):
        per_category = record["per_category"][row["category"]]
        assert row["queries"] == per_category["queries"]
        assert row["PCK@0.2"] == pytest.approx(100 * per_category["PCK@0.2"], abs=0.01)
    chart = breakdown(str(path))[2]
    assert record["headline_metric"] == "PCK@0.2" and chart.layout.title.text.startswith("PCK@0.2 per category")


def test_a_run_named_like_a_paper_method_is_not_merged_with_it(tmp_path):
    """`kptllm eval --name KptLLM++` on COCO: the dashboard keeps the paper's 78.1 AP and the run's own number."""
    from demo.benchmarks import load_results, side_by_side

    run = tmp_path / "coco-run"
    run.mkdir()
    record = json.loads((RESULTS_DIR / "decision/keypointworld-text" / "record.json").read_text())
    record.update(name="KptLLM++", benchmark="coco", metrics={"AP": 0.123}, headline_metric="AP", per_category={},
                  per_keypoint={})
    (run / "record.json").write_text(json.dumps(record))
    table = load_results(tmp_path)
    paper = table[(table["source"] == "paper") & (table["method"] == "KptLLM++")]
    measured = table[table["source"] == "measured"]
    assert set(measured["method"]) == {"KptLLM++ (measured)"} and list(measured["value"]) == [12.3]
    assert len(paper) and not (paper["value"] == 12.3).any()
    wide = side_by_side(table[table["metric"] == "AP"], ["KptLLM++", "KptLLM++ (measured)"])
    assert {"KptLLM++", "KptLLM++ (measured)"} <= set(wide.columns)
    assert 12.3 in set(wide["KptLLM++ (measured)"].dropna()) and 12.3 not in set(wide["KptLLM++"].dropna())


def test_breakdowns_read_only_records_under_results(tmp_path):
    """The breakdown endpoint takes a path from the client: nothing but results/**/record.json is read."""
    outside = tmp_path / "record.json"
    outside.write_text((RESULTS_DIR / "decision/keypointworld-semantic" / "record.json").read_text())
    linked = RESULTS_DIR / "decision/keypointworld-semantic" / "linked-outside"
    linked.symlink_to(tmp_path, target_is_directory=True)
    try:
        for path in (outside, RESULTS_DIR.joinpath(*[".."] * (len(RESULTS_DIR.parts) - 1), *outside.parts[1:]), linked / "record.json",
                     RESULTS_DIR / "decision/keypointworld-semantic" / "run.json",
                     RESULTS_DIR.parent / "assets" / "kptllm-keypointworld" / "config.json"):
            assert all(frame.empty for frame in (*breakdowns(str(path)), *semantic_errors(str(path)))), path
    finally:
        linked.unlink()
    assert not semantic_errors(str(RESULTS_DIR / "decision/keypointworld-semantic" / "record.json"))[0].empty


def test_parameters_have_names_and_take_keywords(client):
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    names = {e: [p["parameter_name"] for p in api[e]["parameters"]] for e in ("/describe", "/detect_text", "/detect_visual", "/detect_wild")}
    assert names["/describe"] == ["image", "x", "y", "box"]
    assert names["/detect_text"] == ["image", "preset", "keypoints", "use_descriptions", "box", "min_score"]
    assert names["/detect_visual"] == ["query", "support_1", "support_2", "support_3", "support_4", "support_5", "points",
                                       "support_boxes", "query_box", "min_score"]
    assert names["/detect_wild"] == ["image", "objects", "preset", "keypoints", "box_threshold", "text_threshold",
                                     "boxes", "min_score", "detector"]
    _, table, _, js, *_ = client.predict(image=handle_file(PERSON), keypoints="nose", box=PERSON_BOX, api_name="/detect_text")
    payload = json.loads(open(js).read())
    assert _table(table)[0][2] == "nose" and payload["prompt"]["bbox"] == [63, 136, 84, 96]


def _slots(image):
    """Every image slot of every task endpoint, each with `image` in it and good values elsewhere."""
    good, points = handle_file(PERSON), {"headers": ["support", "keypoint", "x", "y", "name"], "data": [[1, 1, 100, 150, ""]]}
    return [("/describe", dict(image=image, x=10, y=10, box="")),
            ("/detect_text", dict(image=image, keypoints="nose")),
            ("/detect_visual", dict(query=image, support_1=good, points=points)),
            ("/detect_visual", dict(query=good, support_1=image, points=points)),
            ("/detect_wild", dict(image=image, keypoints="nose", boxes=PERSON_BOX))]


def test_a_file_that_is_not_an_image_gets_one_plain_sentence_in_every_slot(client, tmp_path):
    fake = tmp_path / "photo.jpg"
    fake.write_text("hello, I am a text file")
    for endpoint, kwargs in _slots(handle_file(str(fake))):
        with pytest.raises(Exception) as info:
            client.predict(**kwargs, api_name=endpoint)
        message = str(info.value)
        assert "is not an image file this demo can read" in message, (endpoint, message)
        assert "preprocess" not in message and "/tmp" not in message and "Traceback" not in message


def test_huge_images_are_refused_in_every_slot_without_being_decoded(app, client, tmp_path, monkeypatch):
    """12000 x 12000 pixels (a few kB as a 1-bit PNG): refused from its header; nothing decodes it (the server
    runs in this process, so a spy on PIL's decoder sees every decode). Peak memory: test_units."""
    from PIL import ImageFile

    huge = tmp_path / "huge.png"
    Image.new("1", (12000, 12000)).save(huge)
    decoded = []
    real_load = ImageFile.ImageFile.load

    def spy(self):
        if self.size[0] * self.size[1] > 40_000_000:
            decoded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    for endpoint, kwargs in _slots(handle_file(str(huge))):
        with pytest.raises(Exception, match="12000x12000 pixels; the limit is 40 megapixels"):
            client.predict(**kwargs, api_name=endpoint)
    assert decoded == []


def test_no_server_path_reaches_a_visitor(app, client):
    """Project paths, the data folders records were made from and the model's folder stay on the server: not in
    /config, the benchmark table and CSV, the record list, the provenance or an export's model field."""
    from demo.benchmarks import ROOT

    config = httpx.get(app[0] + "config", timeout=30).text
    assert str(ROOT) not in config and '"/tmp/kw' not in config
    rows, _, csv = client.predict([], [], [], [], ["measured"], api_name="/benchmarks")
    text = open(csv).read() + json.dumps(rows)
    assert str(ROOT) not in text and "/tmp/" not in text
    assert all(not str(r).startswith("/") for r in pd_column(rows, "record"))
    _, _, _, js, *_ = client.predict(image=handle_file(PERSON), keypoints="nose", box=PERSON_BOX, api_name="/detect_text")
    assert json.loads(open(js).read())["model"] == "kptllm-keypointworld (embedded)"


def pd_column(value, name):
    return [row[value["headers"].index(name)] for row in value["data"]]


def test_the_readme_gradio_client_example_runs(app, monkeypatch):
    """The README's scripting example, as written (keywords), against this server."""
    from demo.benchmarks import ROOT

    readme = (ROOT / "README.md").read_text()
    block = readme.split("Scripting it with `gradio_client`", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(ROOT)
    scope = {}
    exec(block.replace("http://127.0.0.1:7860/", app[0]), scope)
    assert Path(scope["coco_json"]).is_file() and _table(scope["table"])[0][2] == "nose"


def test_a_measured_number_sits_next_to_the_paper_s_on_the_same_protocol(tmp_path):
    """A COCO run scored as the paper's Table (GT boxes, no flip, AP) lines up with the paper's rows, with the
    difference; its n comes from the record's counts."""
    from demo.benchmarks import load_results, measured_vs_paper

    run = tmp_path / "coco-run"
    run.mkdir()
    record = json.loads((RESULTS_DIR / "decision/keypointworld-text" / "record.json").read_text())
    record.update(name="my-model", benchmark="coco", metrics={"AP": 0.123}, headline_metric="AP", per_category={},
                  per_keypoint={}, counts={"instances": 6352, "keypoints": 50000, "unparsed": 3})
    (run / "record.json").write_text(json.dumps(record))
    table = load_results(tmp_path)
    assert set(table.loc[table["source"] == "measured", "n"]) == {"6352 instances · 50000 keypoints"}
    lines = measured_vs_paper(table)
    ours = lines[lines["paper method"] == "KptLLM++"]
    assert len(ours) == 1 and ours.iloc[0]["measured"] == "my-model" and ours.iloc[0]["value"] == 12.3
    assert ours.iloc[0]["difference"] == pytest.approx(12.3 - ours.iloc[0]["paper value"], abs=0.01)
    assert set(lines["dataset"]) == {"COCO val"} and set(lines["metric"]) == {"AP"}
    assert measured_vs_paper(load_results(RESULTS_DIR)).empty  # KeypointWorld has no paper rows


def test_gallery_endpoints(client):
    """Show a record's worst units, the same units of a second record beside them with the paired difference
    of `kptllm compare`, and export the selection as a PNG grid plus JSON."""
    from evaluation.compare import compare, load_run

    items, status = client.predict("decision/keypointworld-visual", "(none)", "worst", None, None, 12,
                                   api_name="/benchmarks_gallery")[:2]
    assert len(items) == 12 and "12 of 523 units" in status
    scores = [float(re.search(r"PCK@0\.2 ([0-9.]+)", item["caption"])[1]) for item in items]
    assert scores == sorted(scores)
    items = client.predict("decision/keypointworld-visual", "decision/keypointworld-offcentre-visual", "loss", "person",
                           None, 60, api_name="/benchmarks_gallery")[0]
    assert items and all(item["caption"].startswith("person") for item in items)
    differences = [float(re.search(r"B - A ([-+0-9.]+)", item["caption"])[1]) for item in items]
    assert differences == sorted(differences)
    line = client.predict("decision/keypointworld-visual", "decision/keypointworld-offcentre-visual", api_name="/benchmarks_paired_difference")
    c = compare(load_run(RESULTS_DIR / "decision/keypointworld-visual"), load_run(RESULTS_DIR / "decision/keypointworld-offcentre-visual"))
    assert f"{100 * c.difference:+.2f}" in line and f"[{100 * c.low:+.2f}, {100 * c.high:+.2f}]" in line
    assert "523 paired units" in line
    files = client.predict("decision/keypointworld-semantic", "(none)", "worst", "quadruped", None, 8,
                           api_name="/benchmarks_gallery_export")
    png = next(f for f in files if f.endswith(".png"))
    info = json.loads(Path(next(f for f in files if f.endswith(".json"))).read_text())
    assert Path(png).name == "kptllm-gallery-decision-keypointworld-semantic.png" and info["grid"] == Path(png).name
    assert len(info["entries"]) == 8 and {e["category"] for e in info["entries"]} == {"quadruped"}
    assert "paired_difference" not in info  # one record: nothing paired
    files = client.predict("decision/keypointworld-visual", "decision/keypointworld-offcentre-visual", "loss", None,
                           None, 6, api_name="/benchmarks_gallery_export")
    paired = json.loads(Path(next(f for f in files if f.endswith(".json"))).read_text())["paired_difference"]
    assert (paired["difference"], paired["low"], paired["high"], paired["units"]) == (c.difference, c.low, c.high, 523)
    assert paired["verdict"] == c.verdict and paired["low"] <= paired["difference"] <= paired["high"]
    with pytest.raises(Exception, match="pick a second record"):
        client.predict("decision/keypointworld-visual", "(none)", "gain", None, None, 12, api_name="/benchmarks_gallery")
    with pytest.raises(Exception, match="not in the list of choices|No record named"):  # Gradio's check, then ours
        client.predict("../../etc", "(none)", "worst", None, None, 12, api_name="/benchmarks_gallery")
