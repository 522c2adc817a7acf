"""A model the tests can trust to answer: the tiny model overfitted on one real COCO person."""

from __future__ import annotations

import torch

from kptllm.batch import KeypointSample, collate_samples
from kptllm.build import build_tiny
from kptllm.protocol import Task

COCO_NAMES = ["nose", "left eye", "right eye", "left ear", "right ear", "left shoulder", "right shoulder"]


def overfit_tiny(instance, steps: int = 400, target_loss: float = 0.01):
    """Train a tiny model until it reproduces the first 7 COCO keypoints of `instance` in all three tasks.

    Returns (model, processor, [(name, (x, y)) of the visible keypoints]).
    """
    model, processor = build_tiny(seed=0, llm_tuning="full", vision_tuning="full")
    query = processor.prepare_image(instance.image, instance.bbox)
    visible = [(COCO_NAMES[k], (x, y)) for k, (x, y, v) in enumerate(instance.keypoints[:7]) if v > 0]
    samples = []
    for name, xy in visible:
        samples += [KeypointSample(Task.TEXT, query, name, xy=xy, text=name),
                    KeypointSample(Task.SEMANTIC, query, name, support_points=[xy]),
                    KeypointSample(Task.VISUAL, query, name, xy=xy, supports=[query], support_points=[xy])]
    batch = collate_samples(processor, samples)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3, weight_decay=0.0)
    torch.manual_seed(0)
    model.train()
    for _ in range(steps):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < target_loss:
            break
    return model.eval(), processor, visible
