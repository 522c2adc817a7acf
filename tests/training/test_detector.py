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


# ----------------------------------------------------------------------------------------- images read at their aspect
ASPECT = {**TINY, "image_size": 64, "max_size": 128}


def _with_rectangle(size, box, colour=(255, 0, 0)):
    """A grey image of `size` (w, h) with a filled rectangle at xywh `box` (whole pixels)."""
    image = Image.new("RGB", size, (128, 128, 128))
    x, y, w, h = box
    image.paste(Image.new("RGB", (w, h), colour), (x, y))
    return image


def test_an_image_keeps_its_aspect_its_sides_multiples_of_32_and_the_longer_capped():
    detector = build_detector(DetectorSpec(**ASPECT))
    assert detector.keeps_aspect and detector.image_size == 64
    assert detector.input_size(300, 150) == (64, 128)    # (height, width): the shorter side at 64
    assert detector.input_size(150, 300) == (128, 64)
    assert detector.input_size(400, 100) == (32, 128)    # the longer side capped at 128 first
    assert detector.input_size(90, 100) == (64, 64)      # 57.6 rounds to 64
    assert detector.input_size(1, 1) == (64, 64) and detector.input_size(10_000, 1) == (32, 128)
    square = build_detector(DetectorSpec(**TINY))
    assert not square.keeps_aspect and square.input_size(300, 150) == (64, 64)
    with pytest.raises(ValueError, match="max_size"):
        DetectorSpec(**{**TINY, "max_size": 32})


@pytest.mark.parametrize("spec", [TINY, ASPECT], ids=["stretched", "aspect"])
def test_a_normalised_target_lands_on_its_object_in_the_padded_batch(spec):
    """Each image of a batch is resized to its own input size and padded to the largest: the targets, normalized
    to the padded frame by `targets(scene, span)`, must cover the object's pixels in the network's input (a span
    taken from the image instead of the padded frame, or width and height swapped, would miss them)."""
    detector = build_detector(DetectorSpec(**spec))
    wide = _with_rectangle((300, 100), (200, 20, 60, 50))
    tall = _with_rectangle((90, 240), (10, 150, 40, 60), colour=(0, 0, 255))
    pixels, spans = detector.encode([wide, tall])
    frame_h, frame_w = pixels.shape[-2:]
    for k, (image, box, channel) in enumerate(((wide, (200, 20, 60, 50), 0), (tall, (10, 150, 40, 60), 2))):
        scene = type("Scene", (), {"image": image, "objects": [type("O", (), {"bbox": box})]})
        cx, cy, w, h = _boxes(scene, spans[k])
        other = 2 - channel
        ys, xs = torch.nonzero((pixels[k, channel] > 0.9) & (pixels[k, other] < 0.1), as_tuple=True)
        found = (xs.min().item() / frame_w, ys.min().item() / frame_h, (xs.max().item() + 1) / frame_w,
                 (ys.max().item() + 1) / frame_h)
        expected = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        assert found == pytest.approx(expected, abs=1.5 / min(frame_w, frame_h))
    if spec is ASPECT:  # the tall image sits in the padded frame's top left, the rest black
        assert detector.input_size(90, 240) == (128, 64) and pixels.shape[-2:] == (128, 128)
        assert float(pixels[1, :, :, 64:].abs().max()) == 0.0


def _boxes(scene, span):
    """`targets(scene, span)`'s one box, for a scene of one object of any category."""
    scene.objects[0].category = type("C", (), {"name": "car"})
    return targets(scene, span)["boxes"][0].tolist()


class _Oracle(torch.nn.Module):
    """A stand-in network that answers each image's `targets` (one query per object, sure of its class): the
    detector's boxes must then come back as the objects' boxes in each image's own pixels."""

    def __init__(self, config, answers):
        super().__init__()
        self.config, self.answers, self.weight = config, answers, torch.nn.Parameter(torch.zeros(1))

    def forward(self, pixel_values):
        from transformers.models.rt_detr.modeling_rt_detr import RTDetrObjectDetectionOutput

        queries, classes = 5, len(self.config.id2label)
        logits = torch.full((len(self.answers), queries, classes), -20.0)
        boxes = torch.full((len(self.answers), queries, 4), 0.5)
        for k, answer in enumerate(self.answers):
            for q, (label, box) in enumerate(zip(answer["class_labels"].tolist(), answer["boxes"])):
                logits[k, q, label], boxes[k, q] = 20.0, box
        return RTDetrObjectDetectionOutput(logits=logits, pred_boxes=boxes)


@pytest.mark.parametrize("spec", [TINY, ASPECT], ids=["stretched", "aspect"])
def test_boxes_the_network_gives_in_its_frame_come_back_in_each_images_pixels(spec):
    detector = build_detector(DetectorSpec(**spec))
    scenes = [training_scene(21, 2, 1.0), training_scene(21, 0, 0.0)]  # a wide off-centre canvas beside a tall scene
    assert len({detector.input_size(*s.image.size) for s in scenes}) == 2 or spec is TINY
    _, spans = detector.encode([s.image for s in scenes])
    oracle = _Oracle(detector.model.config, [targets(s, span) for s, span in zip(scenes, spans)])
    found = ClosedSetDetector(oracle, detector.image_processor).detect_batch([s.image for s in scenes], 0.5)
    for scene, boxes in zip(scenes, found):
        expected = sorted((o.category.name, tuple(round(v, 2) for v in o.bbox)) for o in scene.objects)
        got = sorted((d.label, tuple(round(v, 2) for v in d.xywh)) for d in boxes)
        assert [label for label, _ in got] == [label for label, _ in expected]
        for (_, a), (_, b) in zip(got, expected):
            assert a == pytest.approx(b, abs=0.05)


def test_a_run_reading_images_at_their_aspect_saves_and_loads_so(tmp_path):
    config = _config(tmp_path, steps=2, validate_every=2, validate_images=2, off_centre_prob=1.0)
    config.write_text(json.dumps({**json.loads(config.read_text()), "detector": ASPECT}))
    assert main(["train-detector", "--config", str(config), "--output", str(tmp_path / "run")]) == 0
    saved = ClosedSetDetector.from_pretrained(tmp_path / "run" / "checkpoint" / "model")
    assert saved.keeps_aspect and saved.input_size(300, 150) == (64, 128)
    image = training_scene(11, 0, 1.0).image
    found = saved.detect(image, None, box_threshold=0.0, max_detections=100)
    assert found and all(0 <= x1 <= x2 <= image.width and 0 <= y1 <= y2 <= image.height
                         for x1, y1, x2, y2 in (d.xyxy for d in found))
