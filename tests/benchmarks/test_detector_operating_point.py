"""benchmarks.detector_operating_point: objects found and stray boxes by score, on a hand-made case."""

from benchmarks.detector_operating_point import main, operating_points


def _ground_truth():
    person = {"id": 1, "name": "person", "keypoints": ["nose"], "skeleton": []}
    car = {"id": 2, "name": "car", "keypoints": ["wheel"], "skeleton": []}
    images = [{"id": 1, "file_name": "a.png", "width": 100, "height": 100},
              {"id": 2, "file_name": "b.png", "width": 100, "height": 100}]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "keypoints": [20, 20, 2], "num_keypoints": 1},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [60, 60, 30, 30], "keypoints": [70, 70, 2], "num_keypoints": 1},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 50, 80], "keypoints": [5, 5, 2], "num_keypoints": 1},
    ]
    return {"images": images, "annotations": annotations, "categories": [person, car]}


DETECTIONS = [
    {"image_id": 1, "category_id": 1, "bbox": [11, 10, 40, 40], "score": 0.9},   # person 1, right
    {"image_id": 1, "category_id": 1, "bbox": [60, 60, 30, 30], "score": 0.6},   # on the car, wrong category
    {"image_id": 1, "category_id": 2, "bbox": [62, 60, 30, 30], "score": 0.25},  # the car, low score
    {"image_id": 2, "category_id": 1, "bbox": [50, 0, 50, 80], "score": 0.8},    # beside person 3: IoU 0
]


def test_objects_found_and_unmatched_boxes_by_score(capsys):
    rows = {r["threshold"]: r for r in operating_points(_ground_truth(), DETECTIONS, (0.2, 0.3, 0.95))}
    assert [rows[t]["found"] for t in (0.2, 0.3, 0.95)] == [2, 1, 0]  # the car only at 0.2; person 3 never
    assert rows[0.2]["objects"] == 3 and abs(rows[0.3]["found_share"] - 1 / 3) < 1e-9
    # unmatched: the car-category-wrong box and the box beside person 3 (2 of 2 images -> 1.0 per image)
    assert [rows[t]["unmatched_per_image"] for t in (0.2, 0.3, 0.95)] == [1.0, 1.0, 0.0]


def test_the_command_reads_the_two_files(tmp_path, capsys):
    import json

    (tmp_path / "a.json").write_text(json.dumps(_ground_truth()))
    (tmp_path / "d.json").write_text(json.dumps(DETECTIONS))
    main(["--annotations", str(tmp_path / "a.json"), "--detections", str(tmp_path / "d.json")])
    out = capsys.readouterr().out
    assert "| 0.2 | 2 of 3 | 0.667 | 1.00 |" in out and "| 0.3 | 1 of 3 | 0.333 | 1.00 |" in out


def test_a_folder_without_a_record_is_refused_plainly(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path)])
    assert stop.value.code == 2 and "detections.json not found" in capsys.readouterr().err
