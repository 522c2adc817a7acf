"""A model the tests can trust to answer: the tiny model overfitted on one real COCO person."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from kptllm.batch import KeypointSample, collate_samples
from kptllm.build import build_tiny
from kptllm.image import load_image
from kptllm.protocols.protocol import Task, build_conversation

COCO_NAMES = ["nose", "left eye", "right eye", "left ear", "right ear", "left shoulder", "right shoulder"]


@dataclass
class Support:
    """A support image that is not the query crop: the query photo pasted on a larger canvas at `offset`,
    seen through a box of another size and position. Its crop (and so every normalised point) differs
    from the query's, so normalising support points in the wrong crop changes the prompt."""

    image: np.ndarray
    bbox: tuple[float, float, float, float]
    points: list[tuple[float, float]]


def offset_supports(instance, visible) -> list[Support]:
    """Two deterministic supports made from `instance` (different canvases, offsets and boxes)."""
    photo = np.asarray(load_image(instance.image))
    x, y, w, h = instance.bbox
    out = []
    for (dx, dy), scale, (sx, sy), fill in (((37, 21), 1.3, (0.10, -0.05), 90), ((5, 63), 1.1, (-0.08, 0.06), 200)):
        canvas = np.full((photo.shape[0] + 90, photo.shape[1] + 60, 3), fill, dtype=np.uint8)
        canvas[dy:dy + photo.shape[0], dx:dx + photo.shape[1]] = photo
        bw, bh = w * scale, h * scale
        cx, cy = x + w / 2 + dx + sx * w, y + h / 2 + dy + sy * h
        out.append(Support(canvas, (cx - bw / 2, cy - bh / 2, bw, bh), [(px + dx, py + dy) for _, (px, py) in visible]))
    return out


@contextmanager
def _deterministic():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def _greedy_reproduces(model, batch) -> bool:
    """Teacher-forced argmax equals every answer token (and EOS) <=> greedy decoding reproduces every answer."""
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    labels = batch["labels"][:, 1:]
    predicted = logits[:, :-1].argmax(-1)
    answer = labels != -100
    return bool((predicted[answer] == labels[answer]).all())


def _predictor_reproduces(model, processor, instance, visible) -> bool:
    """The real check: the predictor's (cached, batched) greedy answers to tasks (c) and (a) equal the
    training answers. Task (b) is left to the tests (test_predictor.py), so that a bug in how
    `detect_from_example` prepares supports fails a test rather than this fixture."""
    from kptllm import KeypointPredictor

    predictor = KeypointPredictor(model.eval(), processor)
    predictor.set_image(instance.image, instance.bbox)
    crop = predictor.image_state.prepared.crop
    names, points = [n for n, _ in visible], [xy for _, xy in visible]
    expected = [build_conversation(Task.TEXT, n, n, tuple(crop.to_crop(xy))).answer.strip() for n, xy in visible]
    runs = [
        (predictor.detect(names), expected),
        (predictor.describe(points), names),
    ]
    return all([r.raw.strip() for r in results] == answers for results, answers in runs)


def overfit_tiny(instance, max_steps: int = 600, check_every: int = 25):
    """Train a tiny model until greedy decoding reproduces every training answer exactly.

    Trains the first 7 COCO keypoints of `instance` in all three tasks; task (b) with supports whose
    crops differ from the query's: `offset_supports(...)[0]` (1-shot) and both offset supports (2-shot). Every
    `check_every` steps the teacher-forced argmax is compared with the answers (equal for every token
    <=> greedy decoding reproduces every answer); when it matches, the predictor's own decoding
    of tasks (c) and (a) confirms. Deterministic (fixed seeds, deterministic algorithms).

    Returns (model, processor, [(name, (x, y)) of the visible keypoints]).
    """
    with _deterministic():
        model, processor = build_tiny(seed=0, llm_tuning="full", vision_tuning="full")
        query = processor.prepare_image(instance.image, instance.bbox)
        visible = [(COCO_NAMES[k], (x, y)) for k, (x, y, v) in enumerate(instance.keypoints[:7]) if v > 0]
        supports = offset_supports(instance, visible)
        prepared = [processor.prepare_image(s.image, s.bbox) for s in supports]
        samples = []
        for k, (name, xy) in enumerate(visible):
            samples += [KeypointSample(Task.TEXT, query, name, xy=xy, text=name),
                        KeypointSample(Task.SEMANTIC, query, name, support_points=[xy]),
                        KeypointSample(Task.VISUAL, query, name, xy=xy, supports=prepared[:1],
                                       support_points=[supports[0].points[k]]),
                        KeypointSample(Task.VISUAL, query, name, xy=xy, supports=prepared,
                                       support_points=[s.points[k] for s in supports])]
        batch = collate_samples(processor, samples)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3, weight_decay=0.0)
        torch.manual_seed(0)
        model.train()
        for step in range(max_steps + 1):
            if step % check_every == 0 and step and _greedy_reproduces(model, batch):
                if _predictor_reproduces(model, processor, instance, visible):
                    return model.eval(), processor, visible
                model.train()
            if step == max_steps:
                break
            loss = model(**batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    raise AssertionError(f"the tiny model did not reproduce its training answers in {max_steps} steps")


class Oracle:
    """A stand-in predictor for the runner's tests: its engine answers every text request with the ground
    truth that `truth(request)` returns (`[K, 3]` x, y, v; v = 0 unparsed, else score 1)."""

    def __init__(self):
        self.engine = self

    def prepare(self, request):
        return request

    def answer(self, requests, support_cache=None, feed_forced=True):  # KeypointEngine.answer's signature
        from kptllm import KeypointResult

        return [[KeypointResult(k, "text", n, n, (float(x), float(y)), (0.5, 0.5), float(v > 0), bool(v > 0), None, "")
                 for k, (n, (x, y, v)) in enumerate(zip(r.texts, self.truth(r)))] for r in requests]

    def truth(self, request):
        raise NotImplementedError
