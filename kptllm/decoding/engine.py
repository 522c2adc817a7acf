"""The engine: the one code path from keypoint requests to `KeypointResult`s.

    engine = KeypointEngine(model, processor)
    results = engine.answer([Request(image=path, bbox=box, task=Task.TEXT, texts=names), ...])
    # one list of KeypointResult per request, in request order

Every caller goes through `answer`: the predictor (`set_image` keeps an `ImageState` that its requests
carry, so the image is encoded once for many calls), the evaluation runner at every batch size, and
`KeypointPredictor.detect_objects` (the In-the-wild tab). Per call:

1. every request and text is checked (task, the checkpoint's words) before any work;
2. the query images without a cached state are encoded in one vision call and their text prefixes in
   one LM call (`encode`);
3. keypoint prompts: task (a) reads the query's own features at the points; tasks (b) encode their
   supports once per `support_key` (an MP-100 episode), kept in a `SupportCache` across calls;
4. every keypoint of every request is one row of a single `generation.decode` batch over the P image
   prefixes (rows read their image's prefix KV, never a copy);
5. each row's tokens become a result in pixels of its own image (`answers.read_answer`).

Coordinates: points in and results out are pixels of the original image (after EXIF orientation).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Hashable

import torch

from .answers import KeypointResult, answer_grammar, point_in_crop, read_answer
from .constraints import AnswerGrammar
from ..modeling.shared_prefix import PrefixKV
from .generation import decode, prefill_prefixes
from ..processor import PreparedImage
from ..protocols.protocol import Task


@dataclass
class ImageState:
    """An encoded query image: its crop, its patch features and the KV cache of its text prefix.

    Attributes:
        prepared: the image and its crop (`processor.prepare_image`).
        features: `[1, N, Dv]` patch tokens of the crop (also the support features of task (a)).
        prefix: the prefix KV (system text + visual tokens), `PrefixKV` with one prefix.
    """

    prepared: PreparedImage
    features: torch.Tensor
    prefix: PrefixKV

    @property
    def prefix_length(self) -> int:
        return self.prefix.length


@dataclass
class Request:
    """One query image and the keypoints asked about it.

    Attributes:
        image, bbox: the query image (path / PIL / numpy) and its xywh box in pixels (None = whole image).
        task: TEXT (texts = names), SEMANTIC (points on the query), VISUAL / VISUAL_TEXT (supports).
        texts: one entry per keypoint (None for tasks without a text prompt).
        points: SEMANTIC: the (x, y) pixel points on the query image.
        supports: VISUAL: (images, per-image point lists with None = hidden, bboxes), as `detect_from_example`.
        support_key: requests with the same key share their encoded supports (e.g. the episode number).
        prepared / prepared_supports: the images already loaded and cropped (the runner's prefetch thread).
        state: the query already encoded (`KeypointEngine.encode`; the predictor's `set_image`): `image`,
            `bbox` and `prepared` are then not read.
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
    state: ImageState | None = None


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


class KeypointEngine:
    """Answers `Request`s with a `KptLLMForKeypoints` and its `KptLLMProcessor`.

    Args:
        max_new_tokens: the answer budget per keypoint (a checkpoint protocol's own limit wins).
        constrained: mask decoding to the answer grammar so every detection parses (constraints.py).
    """

    def __init__(self, model, processor, max_new_tokens: int = 64, constrained: bool = True):
        self.model = model
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        self.constrained = constrained

    @property
    def device(self) -> torch.device:
        return self.model.projector.weight.device

    # ----------------------------------------------------------------- images
    def prepare(self, request: Request) -> Request:
        """Load and crop the request's images (CPU work the runner does in a background thread)."""
        if request.state is None and request.prepared is None:
            request.prepared = self.processor.prepare_image(request.image, request.bbox)
        if request.supports is not None and request.prepared_supports is None:
            images, _, boxes = request.supports
            request.prepared_supports = [self.processor.prepare_image(img, box) for img, box in zip(images, boxes)]
        return request

    @torch.no_grad()
    def encode(self, prepared: list[PreparedImage]) -> list[ImageState]:
        """Encode P cropped query images: one vision call `[P, N, Dv]` and one LM call over their prefixes."""
        return self._encode(prepared)[0]

    def _encode(self, prepared: list[PreparedImage]) -> tuple[list[ImageState], PrefixKV]:
        """The states and the prefixes of all P images as one `PrefixKV` (the states hold views of it)."""
        model = self.model
        features = model.encode_images(torch.stack([p.pixel_values for p in prepared]).to(self.device))
        ids = torch.tensor([self.processor.encode_prefix()] * len(prepared), device=self.device)
        prefixes = prefill_prefixes(model.language_model, model.embed_inputs(ids, image_tokens=model.project_image(features)))
        states = [ImageState(prep, features[i:i + 1], PrefixKV([k[i:i + 1] for k in prefixes.keys],
                                                               [v[i:i + 1] for v in prefixes.values]))
                  for i, prep in enumerate(prepared)]
        return states, prefixes

    # ----------------------------------------------------------------- prompts
    def _tensor(self, values, dtype=torch.long) -> torch.Tensor:
        return torch.tensor(values, device=self.device, dtype=dtype)

    def point_prompts(self, state: ImageState, points) -> torch.Tensor:
        """Task (a): prompt tokens `[K, D]` of pixel `points` on the query image itself."""
        normalized = [point_in_crop(p, state.prepared, f"point {i}") for i, p in enumerate(points)]
        count = len(normalized)
        return self.model.encode_prompts(state.features, self._tensor(normalized, torch.float32),
                                         self._tensor([0] * count), self._tensor(list(range(count))), count,
                                         state.prepared.pixel_values[None].to(self.device))

    def support_prompts(self, prepared: list[PreparedImage], point_lists: list[list]) -> torch.Tensor:
        """Task (b): prompt tokens `[K, D]` of the keypoints marked on 1..5 supports (None = hidden on that one);
        a keypoint's prompt averages the supports that show it. All supports are encoded in one call."""
        points, support_ids, slot_ids = [], [], []
        for shot, (plist, prep) in enumerate(zip(point_lists, prepared)):
            for k, point in enumerate(plist):
                if point is not None:
                    points.append(point_in_crop(point, prep, f"support point {k} of support {shot}"))
                    support_ids.append(shot)
                    slot_ids.append(k)
        count = len(point_lists[0])
        missing = sorted(set(range(count)) - set(slot_ids))
        if missing:
            raise ValueError(f"keypoints {missing} are not visible on any support image")
        pixels = torch.stack([p.pixel_values for p in prepared]).to(self.device)
        return self.model.encode_prompts(self.model.encode_images(pixels), self._tensor(points, torch.float32),
                                         self._tensor(support_ids), self._tensor(slot_ids), count, pixels)

    def _prompts(self, request: Request, support_cache: SupportCache) -> torch.Tensor | None:
        task = Task(request.task)
        if task is Task.SEMANTIC:
            return self.point_prompts(request.state, request.points)
        if not task.has_kpt_prompt:
            return None
        tokens = support_cache.get(request.support_key)
        if tokens is None:
            tokens = self.support_prompts(request.prepared_supports, request.supports[1])
            support_cache.put(request.support_key, tokens)
        return tokens

    # ----------------------------------------------------------------- answers
    def check(self, requests: list[Request]) -> list[list[list[int]]]:
        """The query token ids of every keypoint, in the checkpoint's own words (a converted LocLLM asks as
        LocLLM asks and knows only its names): checks every request before any image is encoded."""
        protocol = self.processor.protocol
        queries = []
        for request in requests:
            task = Task(request.task)
            protocol.check_task(task)
            count = len(request.points) if task is Task.SEMANTIC else len(request.texts)
            if task is Task.SEMANTIC and len(request.texts) != count:
                raise ValueError(f"{count} points but {len(request.texts)} texts")
            queries.append([self.processor.encode_conversation(protocol.conversation(task, text=text)).query_ids
                            for text in request.texts])
        return queries

    @torch.no_grad()
    def answer(self, requests: list[Request], support_cache: SupportCache | None = None,
               feed_forced: bool = True) -> list[list[KeypointResult]]:
        """Answer all requests in one decoding batch; one result list per request, in request order.

        `feed_forced=False` keeps every number independent of what else is in the batch (`generation.decode`):
        the tokens are the same either way, the scores move at float rounding.

        Fills each request's `prepared` (and `prepared_supports`) and `state`: asking a request again reuses
        its loaded and encoded image. A point outside its crop or a keypoint shown on no support is a
        ValueError naming it."""
        if not requests:
            return []
        queries = self.check(requests)
        support_cache = support_cache if support_cache is not None else SupportCache()
        for request in requests:
            self.prepare(request)
        new = [r for r in requests if r.state is None]
        if new:
            states, prefixes = self._encode([r.prepared for r in new])
            for request, state in zip(new, states):
                request.state = state
        if len(new) < len(requests):  # some came encoded (the predictor): their prefixes in request order
            prefixes = PrefixKV.cat([r.state.prefix for r in requests])  # P x Lp copied once, never per keypoint

        model, device = self.model, self.device
        suffixes, row_prefix, modes = [], [], []
        for index, (request, query_ids) in enumerate(zip(requests, queries)):
            kpt_tokens = self._prompts(request, support_cache)
            task = Task(request.task)
            for k, ids in enumerate(query_ids):
                kpt = None if kpt_tokens is None else kpt_tokens[k:k + 1]
                suffixes.append(model.embed_inputs(torch.tensor([ids], device=device), kpt_tokens=kpt)[0])
                row_prefix.append(index)
                modes.append(AnswerGrammar.start_mode(task.has_coordinates))
        grammar = answer_grammar(model, self.processor, self.constrained)
        generated = decode(model.language_model, prefixes, suffixes, self.processor.eos_token_id,
                           self.processor.protocol.max_new_tokens or self.max_new_tokens,
                           row_prefix=row_prefix, grammar=grammar, start_modes=modes, feed_forced=feed_forced)
        out, row = [], 0
        for request, query_ids in zip(requests, queries):
            task = Task(request.task)
            out.append([read_answer(self.processor, k, task, request.texts[k], generated.token_ids[row + k],
                                    generated.token_probs[row + k], request.state.prepared)
                        for k in range(len(query_ids))])
            row += len(query_ids)
        return out
