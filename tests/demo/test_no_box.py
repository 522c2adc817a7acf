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


def test_describe_without_a_box_uses_the_smallest_box_that_holds_the_click(client, examples):
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
