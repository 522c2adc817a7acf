"""Many keypoint requests about many images in one decoding batch (the evaluation runner's path).

    requests = [Request(image=path, bbox=box, task=Task.TEXT, texts=names), ...]
    results = answer_requests(predictor, requests)      # one list of KeypointResult per request

All query images are encoded in one vision-encoder call and their prefixes in one LM call; every
keypoint of every request becomes one row of a single `generation.decode` batch over the P image
prefixes (no per-row prefix copy). Visual-prompt requests that share `support_key` (the supports of
one MP-100 episode) have their supports encoded once, and with a `SupportCache` across calls.

Inputs are not re-validated here (the predictor's methods do that for users); points must lie in
their crops.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Hashable

import torch

from .constraints import AnswerGrammar
from .generation import decode, prefill_prefixes
from .answers import KeypointResult, grammar_arguments, point_in_crop, read_answer
from .processor import PreparedImage
from .protocol import Task

if TYPE_CHECKING:  # the predictor calls this engine (detect_objects): annotations only, no import circle
    from .predictor import KeypointPredictor


@dataclass
class Request:
    """One image and the keypoints asked about it.

    Attributes:
        image, bbox: the query image (path / PIL / numpy) and its xywh box (None = whole image).
        task: TEXT (texts = names), SEMANTIC (points on the query), VISUAL / VISUAL_TEXT (supports).
        texts: one entry per keypoint (None for tasks without a text prompt).
        points: SEMANTIC: the (x, y) pixel points on the query image.
        supports: VISUAL: (images, per-image point lists with None = hidden, bboxes), as `detect_from_example`.
        support_key: requests with the same key share their encoded supports (e.g. the episode number).
        prepared: the query's `PreparedImage` when already loaded (the runner's prefetch worker).
    """

    image: Any
    bbox: Any
    task: Task
    texts: list
    points: list | None = None
    supports: tuple | None = None
    support_key: Hashable | None = None
    prepared: PreparedImage | None = None
    prepared_supports: list[PreparedImage] | None = None


@dataclass
class SupportCache:
    """Encoded keypoint prompts `[count, D]` per support key (least recently used dropped beyond `size`)."""

    size: int = 64
    entries: OrderedDict = field(default_factory=OrderedDict)

    def get(self, key):
        if key is None or key not in self.entries:
            return None
        self.entries.move_to_end(key)
        return self.entries[key]

    def put(self, key, value) -> None:
        if key is None:
            return
        self.entries[key] = value
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


def prepare(predictor: KeypointPredictor, request: Request) -> Request:
    """Load and crop the request's images (CPU work the runner does in a background thread)."""
    processor = predictor.processor
    if request.prepared is None:
        request.prepared = processor.prepare_image(request.image, request.bbox)
    if request.supports is not None and request.prepared_supports is None:
        images, _, boxes = request.supports
        request.prepared_supports = [processor.prepare_image(img, box) for img, box in zip(images, boxes)]
    return request


def _support_tokens(predictor: KeypointPredictor, request: Request) -> torch.Tensor:
    """Keypoint prompt tokens `[count, D]` of a visual request (as `detect_from_example`)."""
    _, point_lists, _ = request.supports
    prepared = request.prepared_supports
    points, support_ids, slot_ids = [], [], []
    for shot, (plist, prep) in enumerate(zip(point_lists, prepared)):
        for k, point in enumerate(plist):
            if point is not None:
                points.append(point_in_crop(point, prep, f"support point {k} of support {shot}"))
                support_ids.append(shot)
                slot_ids.append(k)
    device = predictor.device
    model = predictor.model
    features = model.encode_images(torch.stack([p.pixel_values for p in prepared]).to(device))
    as_tensor = lambda v, dtype=torch.long: torch.tensor(v, device=device, dtype=dtype)  # noqa: E731
    return model.encode_prompts(features, as_tensor(points, torch.float32), as_tensor(support_ids),
                                as_tensor(slot_ids), len(point_lists[0]))


@torch.no_grad()
def answer_requests(predictor: KeypointPredictor, requests: list[Request],
                    support_cache: SupportCache | None = None) -> list[list[KeypointResult]]:
    """Answer all requests in one decoding batch; returns one result list per request, in request order."""
    if not requests:
        return []
    model, processor, device = predictor.model, predictor.processor, predictor.device
    support_cache = support_cache if support_cache is not None else SupportCache()
    protocol = processor.protocol
    for request in requests:
        protocol.check_task(request.task)
        prepare(predictor, request)
    pixels = torch.stack([r.prepared.pixel_values for r in requests]).to(device)
    features = model.encode_images(pixels)  # [P, N, Dv]
    prefix_ids = processor.encode_prefix()
    ids = torch.tensor([prefix_ids] * len(requests), device=device)
    prefixes = prefill_prefixes(model.language_model,
                                model.embed_inputs(ids, image_tokens=model.project_image(features)))

    suffixes, row_prefix, modes, spans = [], [], [], []
    grammar = grammar_arguments(model, processor, predictor.constrained, Task.TEXT, 0).get("grammar")  # None: free
    for index, request in enumerate(requests):
        task = Task(request.task)
        kpt_tokens = None
        if task is Task.SEMANTIC:
            normalized = [point_in_crop(p, request.prepared, f"point {i}") for i, p in enumerate(request.points)]
            count = len(normalized)
            kpt_tokens = model.encode_prompts(features[index:index + 1], torch.tensor(normalized, device=device),
                                              torch.zeros(count, dtype=torch.long, device=device),
                                              torch.arange(count, device=device), count)
        elif task.has_kpt_prompt:
            kpt_tokens = support_cache.get(request.support_key)
            if kpt_tokens is None:
                kpt_tokens = _support_tokens(predictor, request)
                support_cache.put(request.support_key, kpt_tokens)
        start = len(suffixes)
        for k, text in enumerate(request.texts):
            # the checkpoint's own prompt (a converted LocLLM asks in its words and knows only its names)
            query = processor.encode_conversation(protocol.conversation(task, text=text)).query_ids
            kpt = None if kpt_tokens is None else kpt_tokens[k:k + 1]
            suffixes.append(model.embed_inputs(torch.tensor([query], device=device), kpt_tokens=kpt)[0])
            row_prefix.append(index)
            modes.append(AnswerGrammar.start_mode(task.has_coordinates))
        spans.append((start, len(suffixes)))
    generated = decode(model.language_model, prefixes, suffixes, processor.eos_token_id,
                       protocol.max_new_tokens or predictor.max_new_tokens,
                       row_prefix=row_prefix, grammar=grammar, start_modes=modes)
    out = []
    for index, (request, (start, end)) in enumerate(zip(requests, spans)):
        task = Task(request.task)
        out.append([read_answer(processor, k, task, request.texts[k], generated.token_ids[start + k],
                                generated.token_probs[start + k], request.prepared) for k in range(end - start)])
    return out
