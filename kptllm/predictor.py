"""`KeypointPredictor`: the three keypoint tasks on one image, SAM-predictor style.

    p = KeypointPredictor.from_pretrained("path-or-hub-id")
    p.set_image(image, bbox=None)          # encodes the image and its text prefix once
    p.describe((x, y))                     # (a) what is this keypoint?
    p.detect(["left eye", "nose"])         # (c) where are these keypoints?
    p.detect_from_example(support_image, [(x, y), ...], support_bbox=None)   # (b), 1..5 supports

All coordinates in and out are pixels of the original image (after EXIF orientation). All keypoints
of one call are decoded as one batch that shares the cached image prefix. The predictor checks what a
user gives and builds `kptllm.decoding.engine.Request`s; its `engine` (the same one the evaluation runner uses)
does the work.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .decoding.answers import KeypointResult, is_point
from .decoding.engine import ImageState, KeypointEngine, Request
from .image import load_image
from .modeling.lora import merge_lora as merge_adapters
from .modeling.model import KptLLMForKeypoints
from .processor import KptLLMProcessor
from .protocols.protocol import Task

MAX_KEYPOINTS_PER_CALL = 100
MAX_SHOTS = 5
MAX_OBJECTS_PER_CALL = 20  # detect_objects: boxes of one image answered in one batch
DEFAULT_MAX_NEW_TOKENS = 64


def _check_count(count: int) -> None:
    if count == 0:
        raise ValueError("no keypoints requested")
    if count > MAX_KEYPOINTS_PER_CALL:
        raise ValueError(f"{count} keypoints requested; the limit per call is {MAX_KEYPOINTS_PER_CALL}")


def _check_max_new_tokens(value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {value!r}")


def resolve_device(device=None) -> torch.device:
    """`device` as a torch.device (default: CUDA when available, else CPU); ValueError for a device this
    torch cannot use, before any weights are read."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r} (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} asked for, but this torch sees no CUDA GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}: only {torch.cuda.device_count()} CUDA GPU(s) visible")
    elif device.type != "cpu" and device.type != "mps":
        raise ValueError(f"device {str(device)!r} is not supported (use cpu, cuda or cuda:N)")
    return device


class KeypointPredictor:
    """Runs a `KptLLMForKeypoints` on images given in pixels. Not thread-safe (it caches one image)."""

    def __init__(self, model: KptLLMForKeypoints, processor: KptLLMProcessor, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                 constrained: bool = True):
        """`constrained`: mask decoding to the answer grammar so every detection parses (constraints.py)."""
        _check_max_new_tokens(max_new_tokens)
        self.model = model.eval()
        self.processor = processor
        self.engine = KeypointEngine(self.model, processor, max_new_tokens, constrained)
        self._image: ImageState | None = None

    @property
    def max_new_tokens(self) -> int:
        return self.engine.max_new_tokens

    @max_new_tokens.setter
    def max_new_tokens(self, value: int) -> None:
        _check_max_new_tokens(value)
        self.engine.max_new_tokens = value

    @property
    def constrained(self) -> bool:
        return self.engine.constrained

    @constrained.setter
    def constrained(self, value: bool) -> None:
        self.engine.constrained = bool(value)

    @classmethod
    def from_pretrained(cls, path_or_id=None, device=None, dtype=None, merge_lora: bool = True,
                        **kwargs) -> "KeypointPredictor":
        """Load a saved model + tokenizer (`None`: the embedded KeypointWorld model, see `kptllm.embedded`).

        Default device: CUDA if available, else CPU; default dtype: bfloat16 on a GPU that supports it,
        else float32. `merge_lora`: fold LoRA adapters into their weights (`kptllm.modeling.lora.merge_lora`):
        one matmul per projection instead of three, the same outputs up to rounding; the loaded model
        is then for inference only (pass False to keep the adapters, e.g. to train on)."""
        if path_or_id is None:
            from .embedded import embedded_model_path

            path_or_id = embedded_model_path()
        device = resolve_device(device)
        if dtype is None:
            dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        model = KptLLMForKeypoints.from_pretrained(path_or_id, dtype=dtype).to(device)
        if merge_lora:
            merge_adapters(model)
        return cls(model, KptLLMProcessor.from_pretrained(path_or_id, config=model.config), **kwargs)

    @property
    def supported_tasks(self) -> frozenset[Task]:
        """The tasks this checkpoint's protocol can do (a converted LocLLM: only Task.TEXT)."""
        return self.processor.protocol.supported_tasks

    @property
    def device(self) -> torch.device:
        return self.model.projector.weight.device

    # ----------------------------------------------------------------- image
    def set_image(self, image, bbox=None) -> None:
        """Encode the query image (path, PIL or numpy, any mode) around `bbox` (COCO xywh pixels; None = whole image).

        The visual tokens and the KV cache of the shared text prefix are computed here, once.
        """
        self._image = self.engine.encode([self.processor.prepare_image(image, bbox)])[0]

    def reset_image(self) -> None:
        self._image = None

    @property
    def is_image_set(self) -> bool:
        return self._image is not None

    @property
    def image_state(self) -> ImageState:
        """The encoded current image (crop, features, prefix KV); RuntimeError before `set_image`."""
        if self._image is None:
            raise RuntimeError("call set_image() first")
        return self._image

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) of the current image."""
        state = self.image_state
        return state.prepared.width, state.prepared.height

    # ----------------------------------------------------------------- tasks
    @torch.no_grad()
    def describe(self, points):
        """Task (a): what keypoint is at `points` on the current image.

        `points`: one (x, y) pixel point -> one KeypointResult; a list of points -> a list.
        """
        single = is_point(points)
        points = [points] if single else list(points)
        _check_count(len(points))
        results = self._ask(Request(None, None, Task.SEMANTIC, [None] * len(points), points=points))
        return results[0] if single else results

    @torch.no_grad()
    def detect(self, names: str | Sequence[str]) -> list[KeypointResult]:
        """Task (c): locate keypoints given by name or description (e.g. "left eye")."""
        names = [names] if isinstance(names, str) else list(names)
        _check_count(len(names))
        return self._ask(Request(None, None, Task.TEXT, names))

    @torch.no_grad()
    def detect_objects(self, image, boxes, names: str | Sequence[str]) -> list[list[KeypointResult]]:
        """Task (c) for several objects of one image at once (the In-the-wild pipeline): the same `names` in
        every box (xywh pixels; None = the whole image), one list of results per box, in box order.

        Every keypoint of every box is a row of one decoding batch (`kptllm.decoding.engine`), the image is read
        once and the boxes' crops are encoded together: the answers are those of `set_image(image, box)` +
        `detect(names)` per box, several times faster. Independent of `set_image` (the current image stays)."""
        names = [names] if isinstance(names, str) else list(names)
        _check_count(len(names))
        boxes = list(boxes)
        if not 1 <= len(boxes) <= MAX_OBJECTS_PER_CALL:
            raise ValueError(f"give 1 to {MAX_OBJECTS_PER_CALL} boxes, got {len(boxes)}")
        self.engine.check([Request(None, None, Task.TEXT, names)])  # the names, before the image is read
        picture = load_image(image)
        return self.engine.answer([Request(image=picture, bbox=box, task=Task.TEXT, texts=names) for box in boxes])

    @torch.no_grad()
    def detect_from_example(self, support_image, support_points, support_bbox=None, names=None) -> list[KeypointResult]:
        """Task (b) (and (b)+(c) when `names` is given): find the keypoints marked on support image(s).

        Args:
            support_image: one image, or a list of 1..5 images (K-shot).
            support_points: for one image, a list of (x, y) pixel points; for a list of images, one such
                list per image, all of the same length; `None` marks a keypoint not visible on that
                support. The prompt features of one keypoint are averaged over the supports showing it.
            support_bbox: None, one xywh box (one image) or a list of boxes/None (one per image).
            names: optional list of keypoint names/descriptions, one per keypoint (visual + text prompt).
        """
        task = Task.VISUAL if names is None else Task.VISUAL_TEXT
        self.processor.protocol.check_task(task)
        self.image_state  # fails early without a query image
        many = isinstance(support_image, (list, tuple))
        images = list(support_image) if many else [support_image]
        point_lists = [list(p) for p in support_points] if many else [list(support_points)]
        if not 1 <= len(images) <= MAX_SHOTS:
            raise ValueError(f"give 1 to {MAX_SHOTS} support images, got {len(images)}")
        if len(point_lists) != len(images):
            raise ValueError(f"{len(images)} support images but {len(point_lists)} lists of support points")
        count = len(point_lists[0])
        _check_count(count)
        if any(len(p) != count for p in point_lists):
            raise ValueError("every support image needs the same number of points (use None for a hidden keypoint)")
        boxes = (list(support_bbox) if many and support_bbox is not None else
                 [support_bbox] if not many else [None] * len(images))
        if len(boxes) != len(images) or (many and is_point(boxes[:2]) and len(boxes) == 4):
            raise ValueError(f"{len(images)} support images: give support_bbox as a list of {len(images)} boxes "
                             f"(xywh or None), not {support_bbox!r}")
        if names is not None:
            names = [names] if isinstance(names, str) else list(names)
            if len(names) != count:
                raise ValueError(f"{count} support points but {len(names)} names")
        texts = names if names is not None else [None] * count
        return self._ask(Request(None, None, task, texts, supports=(images, point_lists, boxes)))

    def _ask(self, request: Request) -> list[KeypointResult]:
        """One request about the current image, answered by the engine."""
        request.state = self.image_state
        return self.engine.answer([request])[0]
