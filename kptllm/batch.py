"""Training batches: keypoint samples -> the tensors `KptLLMForKeypoints.forward` takes.

One sample is one keypoint question about one query image (the paper trains each keypoint as its own
sequence). Coordinates in samples are pixels of the original images; the crop frames come from the
`PreparedImage`s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .processor import KptLLMProcessor, PreparedImage
from .protocols.protocol import Task, build_conversation


@dataclass
class KeypointSample:
    """One training sequence.

    Attributes:
        task: which task the sequence trains.
        query: the query image (for SEMANTIC: the image the point is on).
        semantics: target keypoint name/description (the answer's first part).
        xy: target location in pixels of the query image (detection tasks).
        text: the keypoint name/description in the prompt (TEXT, VISUAL_TEXT).
        supports: support images for VISUAL / VISUAL_TEXT (K-shot: several); SEMANTIC uses `query`.
        support_points: the prompt point, pixels, one per support (for SEMANTIC: one point on `query`).
    """

    task: Task
    query: PreparedImage
    semantics: str
    xy: tuple[float, float] | None = None
    text: str | None = None
    supports: list[PreparedImage] = field(default_factory=list)
    support_points: list[tuple[float, float]] = field(default_factory=list)


def _xy(point) -> str:
    return "({:g}, {:g})".format(*(float(v) for v in point))


def collate_samples(processor: KptLLMProcessor, samples: list[KeypointSample]) -> dict[str, torch.Tensor]:
    """Batch samples: input_ids, attention_mask, labels, pixel_values, and the kpt prompt tensors.

    Targets and support points must lie in their crop (`crop.contains`); a sample with one outside
    raises ValueError naming it, rather than training on a clipped, wrong location.

    Each distinct `PreparedImage` (by identity) is stored once: several questions about one image share
    its row of `pixel_values` through `image_index [B]`, and supports are deduplicated the same way, so
    the visual encoder runs once per image, not once per question.
    """
    features, pixel_values, support_pixels = [], [], []
    image_rows: dict[int, int] = {}
    support_rows: dict[int, int] = {}
    image_index = []
    kpt_points, kpt_support_ids, kpt_slot_ids = [], [], []
    num_slots = 0  # one <kpt> slot per prompted sample, in batch order
    for number, sample in enumerate(samples):
        task = Task(sample.task)
        xy = None
        if sample.xy is not None:
            if not sample.query.crop.contains(sample.xy):
                raise ValueError(f"sample {number} ({task.value}, {sample.semantics!r}): target {_xy(sample.xy)} is "
                                 "outside the query crop (filter samples with crop.contains)")
            xy = tuple(float(v) for v in sample.query.crop.to_crop(sample.xy).clip(0, 1))  # clip: rounding only
        features.append(processor.training_features(build_conversation(task, sample.text, sample.semantics, xy)))
        if id(sample.query) not in image_rows:
            image_rows[id(sample.query)] = len(pixel_values)
            pixel_values.append(sample.query.pixel_values)
        image_index.append(image_rows[id(sample.query)])
        if task.has_kpt_prompt:
            supports = [sample.query] if task is Task.SEMANTIC else sample.supports
            if not supports or len(sample.support_points) != len(supports):
                raise ValueError(f"a {task.value} sample needs one support point per support image")
            for shot, (support, point) in enumerate(zip(supports, sample.support_points)):
                if not support.crop.contains(point):
                    raise ValueError(f"sample {number} ({task.value}, {sample.semantics!r}): support point {_xy(point)} "
                                     f"of support {shot} is outside its crop (filter samples with crop.contains)")
                kpt_points.append([float(v) for v in support.crop.to_crop(point)])
                if id(support) not in support_rows:
                    support_rows[id(support)] = len(support_pixels)
                    support_pixels.append(support.pixel_values)
                kpt_support_ids.append(support_rows[id(support)])
                kpt_slot_ids.append(num_slots)
            num_slots += 1
    batch = processor.collate_text(features)
    batch["pixel_values"] = torch.stack(pixel_values)
    batch["image_index"] = torch.tensor(image_index, dtype=torch.long)
    if kpt_points:
        batch["support_pixel_values"] = torch.stack(support_pixels)
        batch["kpt_points"] = torch.tensor(kpt_points, dtype=torch.float32)
        batch["kpt_support_ids"] = torch.tensor(kpt_support_ids, dtype=torch.long)
        batch["kpt_slot_ids"] = torch.tensor(kpt_slot_ids, dtype=torch.long)
    return batch
