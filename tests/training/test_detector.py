"""The KeypointWorld detector: built from a config, trained, saved, loaded, resumed (evaluation.training.detector)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from evaluation.cli import main
from evaluation.training.detector import DetectorSpec, build_detector, targets, training_scene
from kptllm.detection import ClosedSetDetector, load_detector

TINY = {"image_size": 64, "embedding_size": 8, "hidden_sizes": [8, 16, 16, 32], "d_model": 16, "ffn_dim": 32, "heads": 2,
        "decoder_layers": 1, "num_queries": 10, "num_denoising": 4}


def _config(tmp_path, **train):
    settings = {"steps": 4, "batch_size": 2, "warmup_steps": 2, "log_every": 1, "save_every": 2, "validate_every": 2,
                "validate_images": 2, "seed": 3, **train}
    path = tmp_path / "det.yaml"
    path.write_text(json.dumps({"detector": TINY, "train": settings}))  # JSON is YAML
    return path


def _outputs(detector, image):
    return [(d.label, tuple(round(v, 4) for v in d.xyxy), round(d.score, 6)) for d in detector.detect_batch([image])[0]]


def test_train_save_load_and_resume(tmp_path):
    config = _config(tmp_path, steps=2)
    out = tmp_path / "run"
    assert main(["train-detector", "--config", str(config), "--output", str(out)]) == 0
    assert json.loads((out / "checkpoint" / "step.json").read_text())["step"] == 2
    # the saved model loads by path (load_detector tells RT-DETR folders from GroundingDINO ids) and answers as saved
    loaded = load_detector(str(out / "checkpoint" / "model"))
    assert isinstance(loaded, ClosedSetDetector) and loaded.categories == ("person", "quadruped", "face", "car", "chair")
    image = training_scene(99, 0, 0.0).image
    again = ClosedSetDetector.from_pretrained(out / "checkpoint" / "model")
    assert _outputs(loaded, image) == _outputs(again, image)
    assert (out / "best" / "validation.json").is_file()
    # a second call with a larger --steps resumes: the log goes on from step 3, nothing is logged twice
    assert main(["train-detector", "--config", str(config), "--output", str(out), "--steps", "4", "--auto-resume"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["step"] for r in rows if "loss" in r]
    assert losses == [1, 2, 3, 4]
    assert json.loads((out / "checkpoint" / "step.json").read_text())["step"] == 4
    # starting again over an existing run is refused (exit 2), not silently mixed
    assert main(["train-detector", "--config", str(config), "--output", str(out)]) == 2


def test_save_in_float16_loads_back_in_float32_with_the_same_boxes(tmp_path):
    torch.manual_seed(0)
    detector = build_detector(DetectorSpec(**TINY))
    detector.save_pretrained(tmp_path / "fp32")
    detector.save_pretrained(tmp_path / "fp16", dtype=torch.float16)
    assert (tmp_path / "fp16" / "model.safetensors").stat().st_size < 0.6 * (tmp_path / "fp32" / "model.safetensors").stat().st_size
    half = ClosedSetDetector.from_pretrained(tmp_path / "fp16")
    assert next(half.model.parameters()).dtype == torch.float32
    image = training_scene(5, 1, 0.0).image
    full = [d.xyxy for d in detector.detect_batch([image], 0.0)[0][:5]]
    assert np.allclose([d.xyxy for d in half.detect_batch([image], 0.0)[0][:5]], full, atol=0.5)


def test_targets_are_normalised_centre_boxes_of_the_scene():
    scene = training_scene(7, 2, 1.0)  # off-centre: a larger canvas
    t = targets(scene)
    w, h = scene.image.size
    for (cx, cy, bw, bh), obj in zip(t["boxes"].tolist(), scene.objects):
        x, y, ow, oh = obj.bbox
        assert (cx * w, cy * h, bw * w, bh * h) == pytest.approx((x + ow / 2, y + oh / 2, ow, oh), rel=1e-5)
    assert [("person", "quadruped", "face", "car", "chair")[c] for c in t["class_labels"].tolist()] == \
        [o.category.name for o in scene.objects]


@pytest.fixture(scope="module")
def tiny_detector():
    torch.manual_seed(0)
    return build_detector(DetectorSpec(**TINY))


def test_phrases_map_to_categories_and_an_unknown_one_is_said_plainly(tiny_detector):
    assert tiny_detector.resolve("Person. quadrupeds") == ["person", "quadruped"]
    assert tiny_detector.resolve("a dog, the cars; people") == ["quadruped", "car", "person"]
    assert tiny_detector.resolve(None) == list(tiny_detector.categories)
    with pytest.raises(ValueError, match=r"knows only person, quadruped, face, car, chair; it does not know 'giraffe'"):
        tiny_detector.resolve("person. giraffe.")


def test_boxes_are_in_the_exif_rotated_frame_and_only_of_the_asked_category(tiny_detector, tmp_path):
    stored = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 180, 3), dtype=np.uint8))
    exif = stored.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif)
    upright = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    every = tiny_detector.detect(upright, None, box_threshold=0.0, max_detections=100)
    assert every and all(x2 <= 60 and y2 <= 180 for _, _, x2, y2 in (d.xyxy for d in every))
    assert [d.xyxy for d in tiny_detector.detect(path, None, box_threshold=0.0)] == [d.xyxy for d in every]
    cars = tiny_detector.detect(upright, "car", box_threshold=0.0, max_detections=100)
    assert cars == [d for d in every if d.label == "car"]


def test_overlapping_boxes_of_one_object_are_reduced_to_the_best():
    from kptllm.detection import Detection
    from kptllm.detection.closed_set import suppress_overlaps

    best, twin, other_kind = (Detection((0, 0, 100, 100), 0.9, "person"), Detection((2, 2, 100, 100), 0.8, "person"),
                              Detection((1, 1, 100, 100), 0.7, "quadruped"))
    apart = Detection((200, 0, 300, 100), 0.6, "person")
    found = [best, twin, other_kind, apart]
    assert suppress_overlaps(found, 0.7, per_category=True) == [best, other_kind, apart]  # scoring: per category
    assert suppress_overlaps(found, 0.5, per_category=False) == [best, apart]  # the demo: one box per object
    assert suppress_overlaps([best], 0.5, per_category=False) == [best]


def test_a_new_run_can_start_from_shipped_weights(tmp_path):
    """`init:` loads a saved detector instead of building one: with lr 0 the run's checkpoint has those weights
    (its parameters; batch-norm running statistics move in a training step whatever the lr)."""
    import torch

    torch.manual_seed(1)
    start = tmp_path / "start"
    build_detector(DetectorSpec(**TINY)).save_pretrained(start)
    config = _config(tmp_path, steps=1, lr=0.0, validate_every=0)
    config.write_text(json.dumps({**json.loads(config.read_text()), "init": str(start)}))
    assert main(["train-detector", "--config", str(config), "--output", str(tmp_path / "run")]) == 0
    trained = dict(ClosedSetDetector.from_pretrained(tmp_path / "run" / "checkpoint" / "model").model.named_parameters())
    initial = dict(ClosedSetDetector.from_pretrained(start).model.named_parameters())
    assert trained.keys() == initial.keys() and all(torch.equal(trained[k], initial[k]) for k in initial)
    scratch = dict(build_detector(DetectorSpec(**TINY)).model.named_parameters())
    assert not all(torch.equal(scratch[k], initial[k]) for k in initial)  # the check can tell other weights apart
    assert json.loads((tmp_path / "run" / "run.json").read_text())["init"] == str(start)


def test_a_run_from_shipped_weights_may_change_the_input_size(tmp_path):
    """The config's image_size wins over the loaded detector's (stage 3 reads 256 px from stage 2's 192 px weights):
    the saved checkpoint resizes to the new size, and its boxes still come back in the input image's pixels."""
    torch.manual_seed(2)
    start = tmp_path / "start"
    build_detector(DetectorSpec(**TINY)).save_pretrained(start)  # 64 px
    settings = {"steps": 1, "batch_size": 2, "warmup_steps": 1, "log_every": 1, "save_every": 1, "validate_every": 0,
                "seed": 3, "lr": 0.0}
    config = tmp_path / "det.yaml"
    config.write_text(json.dumps({"detector": {**TINY, "image_size": 96}, "train": settings, "init": str(start)}))
    assert main(["train-detector", "--config", str(config), "--output", str(tmp_path / "run")]) == 0
    saved = ClosedSetDetector.from_pretrained(tmp_path / "run" / "checkpoint" / "model")
    assert saved.image_processor.size["height"] == saved.image_processor.size["width"] == 96
    assert ClosedSetDetector.from_pretrained(start).image_processor.size["height"] == 64
    image = training_scene(11, 0, 1.0).image
    found = saved.detect(image, None, box_threshold=0.0, max_detections=100)
    assert found and all(0 <= x1 <= x2 <= image.width and 0 <= y1 <= y2 <= image.height
                         for x1, y1, x2, y2 in (d.xyxy for d in found))


def test_an_input_size_the_backbone_cannot_halve_evenly_is_refused(tmp_path):
    with pytest.raises(ValueError, match="multiple of 32"):
        DetectorSpec(**{**TINY, "image_size": 80})
    config = _config(tmp_path)
    config.write_text(json.dumps({**json.loads(config.read_text()), "detector": {**TINY, "image_size": 100}}))
    assert main(["train-detector", "--config", str(config), "--output", str(tmp_path / "run")]) == 2


def test_crowded_items_have_two_or_three_objects_and_zero_keeps_the_old_items():
    from evaluation.data.keypointworld import render_scene

    for index in range(3):  # crowded_prob 0: item i is the scene runs made before the option drew
        old = render_scene(np.random.default_rng([11, index]))
        assert np.array_equal(np.asarray(training_scene(11, index, 0.0, 0.0).image), np.asarray(old.image))
    plain = [len(training_scene(11, i, 0.0).objects) for i in range(40)]
    crowded = [len(training_scene(11, i, 0.0, 1.0).objects) for i in range(40)]
    # an object with fewer than 3 keypoints in view is dropped, so a few crowded items may keep one
    assert sum(n >= 2 for n in crowded) >= 34 > sum(n >= 2 for n in plain)
    assert max(crowded) == 3
    # the same item again is the same scene (a resumed run sees the same data)
    assert np.array_equal(np.asarray(training_scene(11, 5, 0.3, 0.5).image), np.asarray(training_scene(11, 5, 0.3, 0.5).image))


def test_jpeg_items_keep_their_objects_and_lose_what_a_file_loses():
    plain, lossy = training_scene(11, 4, 0.3, 0.4), training_scene(11, 4, 0.3, 0.4, {"prob": 1.0, "quality": [50, 50]})
    assert [(o.category.name, o.bbox) for o in plain.objects] == [(o.category.name, o.bbox) for o in lossy.objects]
    diff = np.abs(np.asarray(plain.image, np.float32) - np.asarray(lossy.image, np.float32)).mean()
    assert 0.3 < diff < 8
    assert np.array_equal(np.asarray(training_scene(11, 4, 0.3, 0.4, {"prob": 0.0}).image), np.asarray(plain.image))


def test_a_bad_augmentation_setting_is_refused_when_the_config_is_read(tmp_path, capsys):
    for bad in ({"crowded_prob": 1.5}, {"off_centre_prob": -0.1}, {"jpeg": {"prob": 0.5, "quality": 90}},
                {"jpeg": {"prob": None}}):
        config = _config(tmp_path, **bad)
        assert main(["train-detector", "--config", str(config), "--output", str(tmp_path / "never")]) == 2, bad
        assert not (tmp_path / "never").exists()
    assert "jpeg takes a mapping" in capsys.readouterr().err


def test_a_best_validated_on_other_images_is_not_compared(tmp_path):
    """A run begun before validation saw JPEG files kept a best scored on lossless renders (higher): it would
    never be replaced by a JPEG row; it counts as no best."""
    from evaluation.training.detector import _best_score

    (tmp_path / "best").mkdir()
    row = {"validation": {"plain": {"AP": 0.8, "AP50": 0.9}, "offcentre": {"AP": 0.6, "AP50": 0.9}}}
    (tmp_path / "best" / "validation.json").write_text(json.dumps(row))
    assert _best_score(tmp_path) == -1.0
    row["validation"]["jpeg_quality"] = 95
    (tmp_path / "best" / "validation.json").write_text(json.dumps(row))
    assert _best_score(tmp_path) == pytest.approx(0.7)
