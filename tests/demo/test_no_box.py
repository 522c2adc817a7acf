"""No box, no problem (issue 27): a request without a box gets the embedded detector's box, drawn and returned."""

import json

import numpy as np
import pytest
from gradio_client import handle_file
from PIL import Image

from kptllm.detection import box_iou
from tests.demo.conftest import EXAMPLES

QUERY = "keypointworld_person.jpg"
SUPPORT = "keypointworld_support_person.jpg"


def _box(text):
    return tuple(float(v) for v in str(text).split(","))


def _drawn_differs(shown, original):
    """The returned slot image shows the original with something drawn on it (same size, some pixels changed)."""
    drawn = np.asarray(Image.open(shown).convert("RGB"), np.int16)
    plain = np.asarray(Image.open(original).convert("RGB"), np.int16)
    return drawn.shape == plain.shape and (np.abs(drawn - plain).sum(-1) > 60).mean() > 0.002


def test_describe_without_a_box_uses_a_detected_box_that_holds_the_click(client, examples):
    truth = examples[0][QUERY]
    x, y, _ = truth["keypoints"][5]  # left shoulder
    _, answer, _, js, box, shown = client.predict(image=handle_file(str(EXAMPLES / QUERY)), x=x, y=y,
                                                  api_name="/describe")
    found = _box(box)
    assert box_iou(found, truth["bbox"]) >= 0.5
    assert found[0] <= x <= found[0] + found[2] and found[1] <= y <= found[1] + found[3]
    assert _drawn_differs(shown, EXAMPLES / QUERY)
    assert "No box was given" in answer and "found the person" in answer
    assert json.loads(open(js).read())["prompt"]["bbox"] == list(found)  # the model looked at that box


def test_detect_text_without_a_box_uses_the_best_box_of_the_presets_category(client, examples):
    truth = examples[0][QUERY]
    _, table, _, js, box, shown = client.predict(image=handle_file(str(EXAMPLES / QUERY)), preset="KeypointWorld person (17)",
                                                 keypoints="\n".join(truth["names"]), api_name="/detect_text")
    assert box_iou(_box(box), truth["bbox"]) >= 0.5 and _drawn_differs(shown, EXAMPLES / QUERY)
    assert json.loads(open(js).read())["prompt"]["bbox"] == list(_box(box))


def test_detect_visual_without_boxes_boxes_the_support_around_its_points_and_the_query_by_category(client, examples):
    truth, support = examples[0][QUERY], examples[1][SUPPORT]
    points = {"headers": ["support", "keypoint", "x", "y", "name"],
              "data": [[1, k + 1, x, y, ""] for k, (x, y) in enumerate(support["keypoints"][:4])]}
    _, table, _, js, support_boxes, query_box, shown = client.predict(
        query=handle_file(str(EXAMPLES / QUERY)), support_1=handle_file(str(EXAMPLES / SUPPORT)), points=points,
        api_name="/detect_visual")
    assert box_iou(_box(support_boxes.splitlines()[0]), support["bbox"]) >= 0.5
    assert box_iou(_box(query_box), truth["bbox"]) >= 0.5 and _drawn_differs(shown, EXAMPLES / QUERY)
    prompt = json.loads(open(js).read())["prompt"]
    assert prompt["bbox"] == list(_box(query_box)) and prompt["support_boxes"][0] == list(_box(support_boxes))


def test_nothing_found_says_so_and_looks_at_the_whole_image(client, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 160), (128, 128, 128)).save(blank)
    _, answer, _, js, box, _ = client.predict(image=handle_file(str(blank)), x=100, y=80, api_name="/describe")
    assert box == "" and "found no object under the click" in answer and "whole image" in answer
    assert json.loads(open(js).read())["prompt"]["bbox"] is None


def test_in_the_wild_finds_the_objects_offline_with_the_embedded_detector(client, examples):
    truth = examples[0][QUERY]
    _, table, _, js = client.predict(image=handle_file(str(EXAMPLES / QUERY)), objects="person.",
                                     preset="KeypointWorld person (17)", keypoints="nose\nleft knee", boxes="",
                                     detector="embedded", api_name="/detect_wild")
    payload = json.loads(open(js).read())
    assert payload["prompt"]["detector"] == "embedded" and payload["prompt"]["boxes_from"].startswith("embedded")
    assert max(box_iou(a["bbox"], truth["bbox"]) for a in payload["annotations"]) >= 0.5


@pytest.mark.parametrize("text,expected", [("KeypointWorld person (17)", "person"), ("AP-10K animal (17)", "animal"),
                                           ("MacaquePose monkey (17)", "monkey")])
def test_a_preset_asks_the_detector_for_its_category(text, expected):
    from demo.boxes import object_phrase

    assert object_phrase(text) == expected


def test_typed_names_are_matched_to_the_categories_they_fit():
    from demo.boxes import categories_for_names

    assert categories_for_names(["left front paw"]) == ["quadruped", "animal"]
    assert "person" in categories_for_names(["nose", "left eye"]) and "face" not in categories_for_names(["nose"])
    assert categories_for_names(["tip of the tail"]) == []


class _FakeDetector:
    """A closed-set detector that returns fixed detections (what the tab logic does with them is under test)."""

    def __init__(self, detections):
        self.detections, self.categories, self.asked = detections, ("person", "quadruped", "face", "car", "chair"), []

    def detect(self, image, text=None, box_threshold=0.3, max_detections=20, **_):
        self.asked.append(text)
        from kptllm.detection import split_phrases

        aliases = {"animal": "quadruped"}
        wanted = [aliases.get(p, p) for p in split_phrases(text)] or list(self.categories)
        if any(w not in self.categories for w in wanted):
            raise ValueError(f"it does not know {wanted}")
        return [d for d in self.detections if d.label in wanted][:max_detections]


def _det(label, xyxy, score=0.9):
    from kptllm.detection import Detection

    return Detection(tuple(float(v) for v in xyxy), score, label)


def test_the_smallest_box_holding_the_click_wins_and_a_margin_takes_edge_clicks():
    from demo.boxes import box_holding

    big, small, other = _det("person", (0, 0, 100, 100)), _det("face", (40, 10, 60, 30)), _det("car", (150, 0, 200, 50))
    assert box_holding([big, small, other], [(50, 20)]) is small
    assert box_holding([big, small, other], [(50, 60)]) is big
    assert box_holding([big, small, other], [(61, 20)]) is small  # within 10 % of the face box's width
    assert box_holding([big, small, other], [(130, 20)]) is None
    assert box_holding([big, small], [(50, 20), (90, 90)]) is big  # all the points: a support's marks


def test_typed_names_that_fit_several_categories_give_each_object_found():
    from demo.boxes import Detectors, boxes_for_names

    person, dog, car = _det("person", (0, 0, 50, 100), 0.9), _det("quadruped", (60, 40, 160, 100), 0.8), _det("car", (0, 0, 9, 9))
    detectors = Detectors(_FakeDetector([person, dog, car]))
    boxes, labels, note = boxes_for_names(detectors, None, "KeypointWorld person (17)", ["nose"])
    assert boxes == [(0.0, 0.0, 50.0, 100.0)] and "person" in note  # the preset's category: its best box
    boxes, labels, _ = boxes_for_names(detectors, None, None, ["nose", "left eye"])  # person and quadruped names
    assert sorted(boxes) == [(0.0, 0.0, 50.0, 100.0), (60.0, 40.0, 100.0, 60.0)] and len(labels) == 2
    boxes, _, note = boxes_for_names(detectors, None, "MacaquePose monkey (17)", ["nose"])
    assert boxes == [] and "does not know 'monkey'" in note and "whole image" in note
    boxes, _, note = boxes_for_names(detectors, None, None, ["tip of the tail"])
    assert boxes == [] and "belong to no preset" in note


def test_visual_boxes_the_supports_around_their_points_and_the_query_by_their_category():
    from demo.boxes import Detectors
    from demo.tabs.visual import find_boxes

    fake = _FakeDetector([_det("quadruped", (10, 10, 90, 70), 0.7), _det("person", (100, 0, 140, 80), 0.95)])
    detectors = Detectors(fake)
    boxes, bbox, note, found = find_boxes(detectors, ["support"], [1], [[(20, 20), (80, 60), None]], [None], "query", None)
    assert boxes == [(10.0, 10.0, 80.0, 60.0)] and found["supports"] == {1: (10.0, 10.0, 80.0, 60.0)}
    assert bbox == (10.0, 10.0, 80.0, 60.0) and fake.asked[-1] == "quadruped"  # the query asked for the support's category
    # a support box the visitor gave stays; its category still comes from the detection holding its points
    boxes, bbox, _, found = find_boxes(detectors, ["support"], [1], [[(110, 10)]], [(95, 0, 50, 90)], "query", None)
    assert boxes == [(95, 0, 50, 90)] and found["supports"] == {} and fake.asked[-1] == "person"
    # nothing holds the points: the whole support, and no category for the query
    boxes, bbox, note, _ = find_boxes(detectors, ["support"], [1], [[(5, 95)]], [None], "query", None)
    assert boxes == [None] and bbox is None and "whole" in note


def test_in_the_wild_gives_each_object_its_own_categorys_keypoints(client, tmp_path):
    """'person. quadruped.' on a drawn scene of a person and a quadruped, keypoints 'each object's own': the person
    is asked the 17 person keypoints, the quadruped the 17 AP-10K ones; the export has one category each."""
    from demo.tabs.wild import EACH
    from evaluation.data.keypointworld import CATEGORIES, render_scene

    scene = render_scene(np.random.default_rng([8080, 44]), num_objects=2)
    assert sorted(o.category.name for o in scene.objects) == ["person", "quadruped"]
    path = tmp_path / "two.png"
    scene.image.save(path)
    _, table, _, js = client.predict(image=handle_file(str(path)), objects="person. quadruped.", preset=EACH,
                                     keypoints="", boxes="", detector="embedded", api_name="/detect_wild")
    payload = json.loads(open(js).read())
    by_id = {c["id"]: c for c in payload["categories"]}
    assert sorted(c["name"] for c in by_id.values()) == ["person", "quadruped"]
    for annotation, result in zip(payload["annotations"], payload["results"]):
        category = by_id[annotation["category_id"]]
        assert category["keypoints"] == list(CATEGORIES[category["name"]].keypoints)
        assert [k["query"] for k in result["keypoints"]] == category["keypoints"]
    for truth in scene.objects:  # both objects found, each with its own category's keypoints
        assert any(by_id[a["category_id"]]["name"] == truth.category.name and box_iou(a["bbox"], truth.bbox) >= 0.5
                   for a in payload["annotations"]), truth.category.name
    with pytest.raises(Exception, match="clear the typed boxes"):
        client.predict(image=handle_file(str(path)), objects="", preset=EACH, keypoints="", boxes="1,1,20,20",
                       api_name="/detect_wild")


class _ConfidentIn:
    """A predictor stand-in whose answer names the box it was given, with a confidence set per box."""

    def __init__(self, scores):
        self.scores, self.asked, self.box = scores, [], None

    def set_image(self, image, bbox=None):
        self.box = tuple(bbox) if bbox is not None else None

    def reset_image(self):
        self.box = None

    def describe(self, points):
        from kptllm.decoding.answers import KeypointResult

        self.asked.append(self.box)
        return [KeypointResult(index=0, task="semantic", query=None, text=f"in {self.box}", xy=None, xy_normalized=None,
                               score=self.scores.get(self.box, 0.0), parsed=True, raw="", error=None)]


def test_a_click_in_overlapping_boxes_takes_the_one_where_the_model_is_most_confident(tmp_path):
    """Objects overlap: the smallest box holding a click is another object's one time in ten. Every box that
    holds the click (the embedded detector's down to CLICK_BOX_THRESHOLD) is asked; the most confident answer
    wins, its box is the one returned; a tie keeps the smallest; a box that does not hold the click is not asked."""
    from demo.boxes import CLICK_BOX_THRESHOLD, Detectors
    from demo.model import LoadedModel
    from demo.tabs.semantic import answer_in_found_box

    image_file = tmp_path / "scene.png"
    Image.new("RGB", (200, 200), (90, 90, 90)).save(image_file)
    image = Image.open(image_file)
    person, chair, car = (_det("person", (20, 20, 120, 180), 0.8), _det("chair", (60, 100, 110, 150), 0.25),
                          _det("car", (150, 0, 200, 40), 0.9))
    fake = _FakeDetector([person, chair, car])
    thresholds = []
    fake_detect = fake.detect
    fake.detect = lambda image, text=None, box_threshold=0.3, **kw: thresholds.append(box_threshold) or \
        [d for d in fake_detect(image, text, box_threshold, **kw) if d.score >= box_threshold]
    detectors = Detectors(fake)
    person_box, chair_box = (20.0, 20.0, 100.0, 160.0), (60.0, 100.0, 50.0, 50.0)
    predictor = _ConfidentIn({person_box: 0.9, chair_box: 0.6})
    loaded = LoadedModel(predictor, "fake", "")
    result, box, field, shown, note = answer_in_found_box(loaded, detectors, str(image_file), image, (80.0, 120.0))
    assert thresholds == [CLICK_BOX_THRESHOLD]
    assert predictor.asked == [chair_box, person_box]  # smallest first; the car's box does not hold the click
    assert box == person_box and result["text"] == f"in {person_box}" and _box(field) == person_box
    assert "of the 2 boxes that hold it" in note and "found the person" in note
    predictor.scores[chair_box] = 0.9  # a tie: the smallest box
    result, box, *_ = answer_in_found_box(loaded, detectors, str(image_file), image, (80.0, 120.0))
    assert box == chair_box
    result, box, field, _, note = answer_in_found_box(loaded, detectors, str(image_file), image, (140.0, 190.0))
    assert box is None and field == "" and "whole image" in note and predictor.asked[-1] is None
