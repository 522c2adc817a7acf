"""KeypointPredictor: the three tasks on real images, batching, caching, and bad input."""

import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from kptllm import MAX_KEYPOINTS_PER_CALL, KeypointPredictor, KeypointResult
from kptllm.decoding.answers import answer_score, read_answer
from kptllm.predictor import MAX_SHOTS
from kptllm.protocols.protocol import MAX_TEXT_CHARS, Task


def _assert_well_formed(result: KeypointResult, task: str, size, crop):
    assert isinstance(result, KeypointResult) and result.task == task
    assert 0.0 <= result.score <= 1.0 and math.isfinite(result.score)
    assert isinstance(result.raw, str)
    if not result.parsed:
        assert result.error and result.text is None and result.xy is None and result.score == 0.0
        return
    assert result.error is None and result.text
    if task == "semantic":
        assert result.xy is None and result.xy_normalized is None
        return
    u, v = result.xy_normalized
    assert 0 <= u <= 1 and 0 <= v <= 1
    assert np.allclose(np.clip(crop.to_image((u, v)), 0, size), result.xy)


def _one_per_dataset(instances):
    seen, out = set(), []
    for inst in instances:
        if inst.dataset not in seen:
            seen.add(inst.dataset)
            out.append(inst)
    return out


def test_all_three_tasks_on_every_real_dataset(predictor, instances):
    support = instances[0]
    for inst in _one_per_dataset(instances):
        predictor.set_image(inst.image, inst.bbox)
        state = predictor.image_state
        crop, size = state.prepared.crop, predictor.image_size
        visible = [(x, y) for x, y, v in inst.keypoints if v > 0 and crop.contains((x, y))][:3]
        assert visible, inst.dataset
        described = predictor.describe(visible)
        assert len(described) == len(visible)
        for r in described:
            _assert_well_formed(r, "semantic", size, crop)
        single = predictor.describe(visible[0])
        assert isinstance(single, KeypointResult)
        for r in predictor.detect(["nose", "left front paw"]):
            _assert_well_formed(r, "text", size, crop)
        support_points = [(x, y) for x, y, v in support.keypoints if v > 0][:2]
        for r in predictor.detect_from_example(support.image, support_points, support_bbox=support.bbox):
            _assert_well_formed(r, "visual", size, crop)
    results = predictor.detect(["nose"])
    assert results[0].query == "nose" and results[0].name == "nose" and "name" in results[0].to_dict()


def _exact(results, visible, crop_side):
    """Same semantics and location as the training answer (exact up to the 3 decimals of the answer)."""
    assert [r.text for r in results] == [n for n, _ in visible]
    for r, (_, xy) in zip(results, visible):
        assert r.parsed and np.abs(np.subtract(r.xy, xy)).max() <= crop_side * 0.0005 + 1e-6


def test_trained_model_answers_all_three_tasks(trained, coco_person):
    predictor, visible = trained
    predictor.set_image(coco_person.image, coco_person.bbox)
    names = [n for n, _ in visible]
    crop_side = predictor.image_state.prepared.crop.side
    detected = predictor.detect(names)
    _exact(detected, visible, crop_side)
    assert all(r.query == name and r.score > 0.5 for r, name in zip(detected, names))
    described = predictor.describe([xy for _, xy in visible])
    assert [r.text for r in described] == names
    assert all(r.parsed and r.score > 0.5 for r in described)


def test_trained_visual_prompts_use_the_support_crop(trained, coco_person):
    """The support is the photo pasted at an offset on a bigger canvas, with another box: its crop differs
    from the query's, so support points normalised in the wrong crop give other prompts (and answers)."""
    from tests.helpers import offset_supports

    predictor, visible = trained
    supports = offset_supports(coco_person, visible)
    predictor.set_image(coco_person.image, coco_person.bbox)
    crop_side = predictor.image_state.prepared.crop.side
    assert predictor.image_state.prepared.crop != predictor.processor.prepare_image(supports[0].image, supports[0].bbox).crop
    one_shot = predictor.detect_from_example(supports[0].image, supports[0].points, support_bbox=supports[0].bbox)
    _exact(one_shot, visible, crop_side)
    two_shot = predictor.detect_from_example([s.image for s in supports], [s.points for s in supports],
                                             support_bbox=[s.bbox for s in supports])
    _exact(two_shot, visible, crop_side)
    assert all(r.task == "visual" and r.score > 0.5 for r in one_shot + two_shot)
    # keypoint 0 hidden on the second support: its prompt is the 1-shot one, the others the 2-shot ones
    hidden = predictor.detect_from_example([s.image for s in supports], [supports[0].points, [None] + supports[1].points[1:]],
                                           support_bbox=[s.bbox for s in supports])
    _exact(hidden, visible, crop_side)


def test_kshot_and_visual_plus_text(trained, coco_person):
    from tests.helpers import offset_supports

    predictor, visible = trained
    support = offset_supports(coco_person, visible)[0]
    predictor.set_image(coco_person.image, coco_person.bbox)
    points = support.points
    hidden = [None] + points[1:]
    results = predictor.detect_from_example([support.image, support.image], [points, hidden],
                                            support_bbox=[support.bbox, support.bbox])
    assert len(results) == len(points) and all(r.task == "visual" for r in results)
    # identical supports average to the same prompt: the answers equal the 1-shot answers
    one_shot = predictor.detect_from_example(support.image, points, support_bbox=support.bbox)
    assert [r.raw for r in results] == [r.raw for r in one_shot]
    named = predictor.detect_from_example(support.image, points[:2], support_bbox=support.bbox,
                                          names=["nose", "left eye"])
    assert [r.task for r in named] == ["visual_text"] * 2 and [r.query for r in named] == ["nose", "left eye"]


def test_image_is_encoded_once_and_keypoints_are_batched(predictor, coco_person):
    calls = {"vision": 0, "llm": 0}
    hooks = [predictor.model.vision_model.register_forward_hook(lambda *a: calls.__setitem__("vision", calls["vision"] + 1)),
             predictor.model.language_model.register_forward_hook(lambda *a: calls.__setitem__("llm", calls["llm"] + 1))]
    try:
        predictor.set_image(coco_person.image, coco_person.bbox)
        assert calls == {"vision": 1, "llm": 1}  # visual tokens + the shared text prefix
        predictor.detect(["nose"])
        one = calls["llm"] - 1
        predictor.detect(["nose", "left eye", "right eye", "left ear", "right ear", "left shoulder", "right shoulder",
                          "left elbow", "right elbow", "left wrist", "right wrist", "left hip", "right hip",
                          "left knee", "right knee", "left ankle", "right ankle"])
        seventeen = calls["llm"] - 1 - one
        assert seventeen == one  # one batched decode, not 17
        predictor.describe([(350, 100), (360, 120)])
        assert calls["vision"] == 1  # the cached image features serve task (a)
        predictor.detect_from_example([coco_person.image] * 3, [[(350, 100)]] * 3, support_bbox=[coco_person.bbox] * 3)
        assert calls["vision"] == 2  # all supports in one encoder call
    finally:
        for hook in hooks:
            hook.remove()


def test_from_pretrained_picks_device_and_dtype(tiny_dir):
    loaded = KeypointPredictor.from_pretrained(tiny_dir)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert loaded.device.type == expected
    assert loaded.model.projector.weight.dtype == (torch.bfloat16 if expected == "cuda" else torch.float32)
    loaded.set_image(np.zeros((50, 80, 3), dtype=np.uint8))  # the default device and dtype run all three tasks
    assert len(loaded.detect(["nose", "tail"])) == 2 and loaded.describe((40, 25)).task == "semantic"
    assert len(loaded.detect_from_example(np.zeros((30, 30), dtype=np.uint8), [(10, 10), None][:1])) == 1
    half = KeypointPredictor.from_pretrained(tiny_dir, device="cpu", dtype=torch.bfloat16)
    half.set_image(np.zeros((50, 80, 3), dtype=np.uint8))
    result = half.detect("nose")[0]
    assert 0 <= result.score <= 1


def test_predictions_are_deterministic_and_survive_save_load(trained, coco_person, tmp_path):
    """Same answers twice, and from a fresh predictor loaded from the folder this one was saved to."""
    from tests.helpers import offset_supports

    predictor, visible = trained
    support = offset_supports(coco_person, visible)[0]
    predictor.model.save_pretrained(tmp_path)
    predictor.processor.save_pretrained(tmp_path)
    reloaded = KeypointPredictor.from_pretrained(tmp_path, device="cpu", dtype=torch.float32)
    assert reloaded is not predictor and reloaded.model is not predictor.model

    def answers(p):
        p.set_image(coco_person.image, coco_person.bbox)
        results = (p.detect([n for n, _ in visible] + ["tail"]) + p.describe([xy for _, xy in visible])
                   + p.detect_from_example(support.image, support.points, support_bbox=support.bbox))
        return [(r.raw, r.xy, round(r.score, 6)) for r in results]

    first = answers(predictor)
    assert [raw.split(" [")[0].strip() for raw, _, _ in first[:len(visible)]] == [n for n, _ in visible]  # trained answers
    assert answers(predictor) == first
    assert answers(reloaded) == first


@pytest.mark.parametrize("image", [
    np.zeros((1, 1, 3), dtype=np.uint8), Image.new("LA", (30, 50)), Image.new("I;16", (64, 48)),
    Image.new("P", (20, 20)), np.full((10, 5), 1.0, dtype=np.float32),
])
def test_odd_images_work(predictor, image):
    predictor.set_image(image)
    assert len(predictor.detect(["nose"])) == 1
    w, h = predictor.image_size
    assert len(predictor.describe([(w / 2, h / 2)])) == 1


def test_bad_inputs_give_clear_errors(predictor, coco_person):
    predictor.reset_image()
    assert not predictor.is_image_set
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.detect(["nose"])
    with pytest.raises(ValueError, match="does not overlap"):
        predictor.set_image(coco_person.image, bbox=(5000, 5000, 10, 10))
    with pytest.raises(ValueError, match="positive"):
        predictor.set_image(coco_person.image, bbox=(0, 0, 0, 10))
    predictor.set_image(coco_person.image, coco_person.bbox)
    w, h = predictor.image_size
    cases = [
        (lambda: predictor.describe((w + 10, 5)), "outside the"),
        (lambda: predictor.describe((-1, 5)), "outside the"),
        (lambda: predictor.describe((1, 1)), "outside the model crop"),
        (lambda: predictor.describe((float("nan"), 5)), "pair of numbers|non-finite"),
        (lambda: predictor.describe([(1, 2, 3)]), "pair of numbers"),
        (lambda: predictor.describe([]), "no keypoints"),
        (lambda: predictor.detect([]), "no keypoints"),
        (lambda: predictor.detect([""]), "empty"),
        (lambda: predictor.detect(["eye [0.1, 0.2]"]), "reserved"),
        (lambda: predictor.detect(["the </s> end"]), "special token </s>"),
        (lambda: predictor.detect_from_example(coco_person.image, [(350, 100)], names=["<pad>"]), "special token <pad>"),
        (lambda: predictor.detect(["x" * (MAX_TEXT_CHARS + 1)]), "limit"),
        (lambda: predictor.detect(["nose"] * (MAX_KEYPOINTS_PER_CALL + 1)), "limit per call"),
        (lambda: predictor.detect_from_example([coco_person.image] * (MAX_SHOTS + 1), [[(350, 100)]] * (MAX_SHOTS + 1)),
         "1 to 5"),
        (lambda: predictor.detect_from_example([coco_person.image] * 2, [[(350, 100)]]), "lists of support points"),
        (lambda: predictor.detect_from_example([coco_person.image] * 2, [[(350, 100)], [(350, 100), (360, 90)]]),
         "same number"),
        (lambda: predictor.detect_from_example([coco_person.image], [[None]]), "not visible on any"),
        (lambda: predictor.detect_from_example(coco_person.image, [(350, 100)], names=["a", "b"]), "names"),
        (lambda: predictor.detect_from_example(coco_person.image, [(350, 100)], support_bbox=(0, 0, -1, 1)), "positive"),
        (lambda: predictor.detect_from_example(coco_person.image, ["12"]), "not the text '12'"),
        (lambda: predictor.detect_from_example([coco_person.image] * 2, [[(350, 100)]] * 2, support_bbox=coco_person.bbox),
         "list of 2 boxes"),
        (lambda: predictor.detect_from_example([coco_person.image] * 4, [[(350, 100)]] * 4, support_bbox=coco_person.bbox),
         "list of 4 boxes"),
        (lambda: predictor.detect_from_example("/nonexistent.jpg", [(350, 100)]), "not found"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    assert predictor.is_image_set  # a bad call keeps the cached image
    assert len(predictor.detect(["nose"])) == 1


def test_decode_keeps_placeholder_tokens_so_the_parser_rejects_them(tiny):
    from kptllm.protocols.protocol import ParseError, Task, parse_answer

    _, processor = tiny
    tok = processor.tokenizer
    ids = tok("left eye", add_special_tokens=False)["input_ids"]
    with_kpt = [tok.bos_token_id] + ids + [processor.kpt_token_id, processor.eos_token_id, processor.pad_token_id]
    text = processor.decode(with_kpt)
    assert "<kpt>" in text and "<s>" not in text and "</s>" not in text and "<pad>" not in text
    assert parse_answer(text, Task.SEMANTIC).reason is ParseError.INVALID_TEXT
    assert "<image>" in processor.decode(ids + [processor.image_token_id])
    assert processor.decode(ids + [processor.eos_token_id]).strip() == "left eye"


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, None])
def test_max_new_tokens_must_be_positive(tiny, bad):
    model, processor = tiny
    with pytest.raises(ValueError, match="max_new_tokens"):
        KeypointPredictor(model, processor, max_new_tokens=bad)
    assert KeypointPredictor(model, processor, max_new_tokens=1).max_new_tokens == 1


def test_score_is_the_geometric_mean_over_the_coordinate_decimals(tiny):
    _, processor = tiny
    ids = processor.tokenizer(" left eye [0.412, 1.000]", add_special_tokens=False)["input_ids"]
    pieces = [processor.tokenizer.decode([i]) for i in ids]
    decimals = {"4": 0.5, "1": 0.8, "2": 0.9}  # x's decimals; y's decimals are "000"
    probs, seen, zeros = [], "", 0
    for piece in pieces:
        seen += piece
        if seen.endswith(("[0.4", "[0.41", "[0.412")):
            probs.append(decimals[piece])
        elif seen.endswith(", 1.0") or seen.endswith(", 1.00") or seen.endswith(", 1.000"):
            probs.append(0.6)
            zeros += 1
        else:
            probs.append(0.01)  # semantics, "[", the leading "0"/"1", ".", ",", " ", "]": not counted
    assert "".join(pieces).strip() == "left eye [0.412, 1.000]" and zeros == 3  # one token per digit here
    expected = (0.5 * 0.8 * 0.9 * 0.6 ** 3) ** (1 / 6)
    assert answer_score(processor, ids, probs, coordinates_only=True) == pytest.approx(expected, rel=1e-9)
    assert answer_score(processor, ids, probs, coordinates_only=False) == pytest.approx(
        math.exp(sum(math.log(p) for p in probs) / len(probs)), rel=1e-9)
    no_coordinates = processor.tokenizer(" left eye", add_special_tokens=False)["input_ids"]
    assert answer_score(processor, no_coordinates, [0.9] * len(no_coordinates), coordinates_only=True) == 0.0


def _score_over_every_prefix(processor, ids, probs):
    """The coordinate score as first written: token spans from every prefix of the whole answer."""
    spans, text = [], ""
    for k in range(len(ids)):
        longer = processor.decode(ids[:k + 1])
        spans.append((len(text), len(longer)) if longer.startswith(text) else (len(longer), len(longer)))
        text = longer
    matches = list(re.finditer(r"\[\d\.(?P<x>\d+), \d\.(?P<y>\d+)\]", text))
    if not matches:
        return 0.0
    digits = set(range(*matches[-1].span("x"))) | set(range(*matches[-1].span("y")))
    chosen = [p for (start, end), p in zip(spans, probs) if digits.intersection(range(start, end))]
    return math.exp(sum(math.log(p) for p in chosen) / len(chosen)) if chosen else 0.0


@pytest.mark.parametrize("text", [" left eye [0.412, 1.000]", " tail [tip] of the [left] wing [0.105, 0.990]",
                                  " a [0.1, 0.2] mark then [0.345, 0.678]", " [0.5, 0.25] and more text after",
                                  " \u00e9t\u00e9 \u4e2d [0.071, 0.5]", " no coordinates [at all", " [[0.333, 0.444]]"])
def test_score_read_from_the_last_bracket_equals_the_score_over_the_whole_answer(tiny, text):
    """The score decodes prefixes from the last "[" token on: the same value as reading every prefix of the
    answer, with brackets in the semantics, two coordinate pairs, text after them, multi-byte characters."""
    _, processor = tiny
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    probs = [0.05 + 0.9 * ((7 * k) % 11) / 10 for k in range(len(ids))]
    decoded = []
    decode_prefixes = processor.decode_prefixes
    processor.decode_prefixes = lambda some: (decoded.append(len(some)), decode_prefixes(some))[1]
    try:
        score = answer_score(processor, ids, probs, coordinates_only=True)
    finally:
        del processor.decode_prefixes
    assert score == pytest.approx(_score_over_every_prefix(processor, ids, probs), rel=1e-12)
    if text.endswith("]") and not text.startswith(" ["):  # coordinates after semantics: only the tail is read
        assert decoded[0] < len(ids), decoded


@pytest.mark.parametrize("text", [" left eye [0.412, 1.000]", " a long description of the tail [0.5, 0.25]", " \u00e9t\u00e9 \u4e2d [0.1",
                                  "<kpt> nose", ""])
def test_prefix_texts_in_one_call_equal_one_decode_per_prefix(tiny, text):
    """The score's token spans come from `decode_prefixes` (one Rust call): the same texts as decoding each prefix,
    also where a character spans several byte tokens and with BOS / EOS among the ids (they are dropped)."""
    _, processor = tiny
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = [processor.tokenizer.bos_token_id] + ids + [processor.eos_token_id]
    assert processor.decode_prefixes(ids) == [processor.decode(ids[:k + 1]) for k in range(len(ids))]


def test_predictions_are_clipped_to_the_image(predictor):
    predictor.set_image(np.zeros((50, 80, 3), dtype=np.uint8))  # the square crop reaches 15 px above and below
    state = predictor.image_state
    assert state.prepared.crop.y0 < 0
    tokens = lambda text: predictor.processor.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    for answer, expected in ((" nose [0.000, 0.000]", (0.0, 0.0)), (" nose [1.000, 1.000]", (80.0, 50.0)),
                             (" nose [0.500, 0.500]", (40.0, 25.0))):
        ids = tokens(answer)
        result = read_answer(predictor.processor, 0, Task.TEXT, "nose", ids, [0.9] * len(ids), state.prepared)
        assert result.parsed and result.xy == pytest.approx(expected)
    assert result.xy_normalized == (0.5, 0.5)


def test_all_objects_of_an_image_in_one_call_answer_as_one_at_a_time(trained, coco_person):
    """`detect_objects` (the In-the-wild pipeline) gives, box by box, what set_image + detect gives: the same
    tokens, the same pixels (a box's crop mixed up with another's would move every point)."""
    predictor, visible = trained
    names = [n for n, _ in visible]
    x, y, w, h = coco_person.bbox
    boxes = [coco_person.bbox, (x - 0.1 * w, y, w * 1.2, h), None, (x + 0.2 * w, y + 0.1 * h, 0.6 * w, 0.6 * h)]
    together = predictor.detect_objects(coco_person.image, boxes, names)
    assert len(together) == len(boxes)
    for box, answers in zip(boxes, together):
        predictor.set_image(coco_person.image, box)
        alone = predictor.detect(names)
        assert [r.raw for r in answers] == [r.raw for r in alone]
        assert [r.xy for r in answers] == [r.xy for r in alone]
        assert [r.score for r in answers] == pytest.approx([r.score for r in alone], abs=1e-5)
    assert together[0] != together[3]  # different crops, different answers


def test_detect_objects_refuses_bad_requests(predictor, coco_person):
    from kptllm.predictor import MAX_OBJECTS_PER_CALL

    with pytest.raises(ValueError, match="give 1 to"):
        predictor.detect_objects(coco_person.image, [], ["nose"])
    with pytest.raises(ValueError, match="give 1 to"):
        predictor.detect_objects(coco_person.image, [None] * (MAX_OBJECTS_PER_CALL + 1), ["nose"])
    with pytest.raises(ValueError, match="no keypoints"):
        predictor.detect_objects(coco_person.image, [None], [])
    with pytest.raises(ValueError):
        predictor.detect_objects(coco_person.image, [None], ["nose [0.1, 0.2]"])  # brackets are the answer's
