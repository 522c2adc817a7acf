"""The gallery of predictions behind a record: entries agree with the record's own scoring, tiles put the
points where they are, selections sort, filter and pair, exports hold what the grid shows."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluation.cli import main
from evaluation.compare import load_run
from evaluation.gallery import Entry, Gallery, load_gallery, select
from evaluation.gallery_render import GOOD, TRUTH, draw, export

RESULTS = Path(__file__).resolve().parents[2] / "results"
SHIPPED = sorted(p.parent.relative_to(RESULTS).as_posix() for p in RESULTS.glob("*/keypointworld-*/record.json"))


@pytest.mark.parametrize("name", SHIPPED)
def test_each_unit_scores_as_the_record_scores_it(name):
    """On a fresh clone (the data made again): every unit's score is the record's metric on that unit alone,
    and the units together give the record's number."""
    gallery, run = load_gallery(RESULTS / name), load_run(RESULTS / name)
    metric = run.record["headline_metric"]
    assert len(gallery.entries) == run.record["units_evaluated"] and not gallery.missing
    for entry in gallery.entries:
        assert entry.score == pytest.approx(run.metric([entry.key], metric), abs=1e-12), entry.key
    counted = sum(int(e.counted.sum()) for e in gallery.entries)
    right = sum(int(e.correct[e.counted].sum()) for e in gallery.entries)
    if metric == "accuracy" or name.endswith("text"):  # pooled over keypoints
        assert right / counted == pytest.approx(run.record["metrics"][metric], abs=1e-12)
    else:  # CAPE: the mean over queries
        assert np.mean([e.score for e in gallery.entries]) == pytest.approx(run.record["metrics"][metric], abs=1e-12)


def _entry(image_path, truth, predicted, box=(50.0, 50.0, 80.0, 80.0)) -> Entry:
    truth, predicted = np.array([truth], float), np.array([predicted], float)
    error = np.hypot(*(predicted - truth).T) / max(box[2:])
    return Entry("1", image_path, image_path.name, 1, "thing", box, ["tip"], truth, np.array([True]), error < 0.2,
                 predicted=predicted, error=error)


def _centroid(tile: Image.Image, colour) -> tuple[float, float]:
    """Centre of the pixels of exactly `colour`, pixel (i, j) counted at (i + 0.5, j + 0.5)."""
    ys, xs = np.nonzero((np.asarray(tile)[..., :3] == colour).all(axis=-1))
    return xs.mean() + 0.5, ys.mean() + 0.5


def test_a_tile_draws_each_point_where_it_is(tmp_path):
    """The box (50, 50, 80, 80) grown by 25 % is the crop [40, 140); at size 100 the scale is 1, so image point
    (70.5, 60.5) is tile point (30.5, 20.5). A crop or an inverse map half a pixel off moves the ring's centre
    by 0.5; swapping x and y moves it by 10."""
    image = np.zeros((200, 200, 3), np.uint8)
    image[60, 70] = (0, 0, 255)  # the pixel under the truth point
    Image.fromarray(image).save(tmp_path / "query.png")
    unanswered = draw(_entry(tmp_path / "query.png", (70.5, 60.5), (np.nan, np.nan)), size=100)
    assert unanswered.size == (100, 100)
    assert tuple(np.asarray(unanswered)[20, 30]) == (0, 0, 255)  # the ring is hollow: the marked pixel shows inside
    tile = draw(_entry(tmp_path / "query.png", (70.5, 60.5), (70.5, 60.5)), size=100)
    for drawn, colour in ((unanswered, TRUTH), (tile, TRUTH), (tile, GOOD)):  # ring and answer's dot on the point
        x, y = _centroid(drawn, colour)
        assert abs(x - 30.5) < 0.2 and abs(y - 20.5) < 0.2, (colour, x, y)
    far = draw(_entry(tmp_path / "query.png", (70.5, 60.5), (110.5, 100.5)), size=200)  # scale 2, a wrong answer
    x, y = _centroid(far, TRUTH)  # PIL draws on whole pixels: a point between them lands up to 0.5 away
    assert abs(x - 61.0) <= 0.5 and abs(y - 41.0) <= 0.5, (x, y)
    assert (np.asarray(far)[120:125, 140:145] != 0).any()  # the answer's dot near (141, 121)


def test_a_missing_image_is_drawn_grey_and_listed(tmp_path):
    entry = _entry(tmp_path / "gone.jpg", (70.5, 60.5), (70.5, 60.5))
    entry.image = None
    tile = draw(entry, size=64)
    assert tile.getpixel((60, 60)) == (90, 90, 90)
    gallery = Gallery(tmp_path, {}, [entry], "points", "PCK@0.2")
    assert gallery.missing == ["gone.jpg"]


def test_selection_sorts_filters_and_pairs():
    visual, offcentre = load_gallery(RESULTS / "decision/keypointworld-visual"), load_gallery(RESULTS / "decision/keypointworld-offcentre-visual")
    worst = [a.score for a, _ in select(visual, "worst")]
    assert worst == sorted(worst) and len(worst) == len(visual.entries)
    assert [a.score for a, _ in select(visual, "best", limit=5)] == sorted(worst, reverse=True)[:5]
    people = select(visual, "worst", category="person")
    assert people and {a.category for a, _ in people} == {"person"}
    noses = select(visual, "worst", keypoint="nose")
    assert noses and all(a.index("nose") is not None for a, _ in noses)
    assert [a.keypoint_score("nose") for a, _ in noses] == sorted(a.keypoint_score("nose") for a, _ in noses)
    pairs = select(visual, "loss", against=offcentre)
    assert all(a.key == b.key and a.category == b.category for a, b in pairs)
    assert all(np.array_equal(a.names, b.names) for a, b in pairs)
    drops = [b.score - a.score for a, b in pairs]
    assert drops == sorted(drops) and drops[0] < 0
    assert [b.score - a.score for a, b in select(visual, "gain", against=offcentre, limit=3)] == sorted(drops, reverse=True)[:3]
    with pytest.raises(ValueError, match="pick a second record"):
        select(visual, "gain")
    with pytest.raises(ValueError, match="differ in task"):
        select(visual, against=load_gallery(RESULTS / "decision/keypointworld-semantic"))
    with pytest.raises(ValueError, match="unknown order"):
        select(visual, "random")


def test_semantic_entries_name_their_answers():
    gallery = load_gallery(RESULTS / "decision/keypointworld-semantic")
    wrong = [(e, k) for e in gallery.entries for k in range(len(e.names)) if e.counted[k] and not e.correct[k]]
    assert wrong and all(e.answers[k] != e.expected[k] for e, k in wrong)
    assert all(e.counted.any() for e, _ in select(gallery, "worst"))  # units with nothing asked are left out


def test_export_writes_the_grid_and_the_same_entries_as_json(tmp_path):
    visual, offcentre = load_gallery(RESULTS / "decision/keypointworld-visual"), load_gallery(RESULTS / "decision/keypointworld-offcentre-visual")
    pairs = select(visual, "worst", limit=7)
    png, js = export(pairs, visual, tmp_path / "worst.png", size=64, columns=3, selection={"order": "worst"})
    assert Image.open(png).size == (3 * 70 + 6, 3 * (64 + 34 + 6) + 6)
    info = json.loads(js.read_text())
    assert [e["key"] for e in info["entries"]] == [a.key for a, _ in pairs]
    assert info["record"]["folder"] == "keypointworld-visual" and info["metric"] == "PCK@0.2"
    first = info["entries"][0]
    assert first["score"] == round(pairs[0][0].score, 4) and first["keypoints"][0].keys() >= {"truth", "predicted", "error", "correct"}
    png, js = export(select(visual, "loss", limit=4, against=offcentre), visual, tmp_path / "pair.png", against=offcentre, size=64)
    info = json.loads(js.read_text())
    assert all(e["a"]["key"] == e["b"]["key"] for e in info["entries"]) and info["against"]["folder"] == "keypointworld-offcentre-visual"
    assert Image.open(png).width == 3 * (2 * 64 + 4 + 6) + 6  # three A | B tiles per row
    with pytest.raises(ValueError, match="nothing to export"):
        export([], visual, tmp_path / "none.png")


def test_show_command(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["show", str(RESULTS / "decision/keypointworld-text"), "--worst", "5", "--category", "quadruped",
                 "--out", str(out), "--size", "96"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["entries"] == 5 and out.is_file() and out.with_suffix(".json").is_file()
    entries = json.loads(out.with_suffix(".json").read_text())["entries"]
    assert {e["category"] for e in entries} == {"quadruped"}
    assert main(["show", str(RESULTS / "decision/keypointworld-text"), "--keypoint", "beak", "--out", str(out)]) == 2
    assert "no counted keypoint 'beak'" in capsys.readouterr().err
    assert main(["show", str(tmp_path), "--out", str(out)]) == 2
    assert "not a finished" in capsys.readouterr().err


def test_a_visual_unit_keeps_its_supports_marked_where_the_query_is_scored():
    from evaluation.gallery_render import MARK, draw_support

    gallery = load_gallery(RESULTS / "decision/keypointworld-visual")
    run = load_run(RESULTS / "decision/keypointworld-visual")
    entry = gallery.entries[0]
    unit = run.units[entry.key]
    assert [s.ann_id for s in entry.supports] == unit["support_ids"] and entry.supports[0].image is not None
    assert np.array_equal(entry.supports[0].marked, entry.counted)
    tile = np.asarray(draw_support(entry.supports[0], 128))
    assert (tile == MARK).all(axis=-1).sum() > 10 * entry.counted.sum()  # a yellow mark per scored keypoint
