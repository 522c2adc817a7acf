"""From a decoded answer to a `KeypointResult` (the engine's read-out).

    point_in_crop(point, prepared, "point 0")   # pixel point -> model-crop frame, checked
    read_answer(processor, k, task, query, token_ids, token_probs, prepared)   # -> KeypointResult
    answer_grammar(model, processor, constrained)                              # the decoder's grammar or None

Coordinates: pixels of the original image in and out; `xy_normalized` in the model crop, each in [0, 1].
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import numpy as np

from .constraints import grammar_for
from ..processor import PreparedImage
from ..protocols.protocol import ParsedAnswer, Task
from ..protocols.checkpoints import DEFAULT_PROTOCOL

_COORDINATE_DIGITS = re.compile(r"\[\d\.(?P<x>\d+), \d\.(?P<y>\d+)\]")


@dataclass(frozen=True)
class KeypointResult:
    """One keypoint answer.

    Attributes:
        index: position in the request.
        task: "semantic", "visual", "text" or "visual_text".
        query: the keypoint name/description asked for (text tasks), else None.
        text: the semantics the model gave (None when the answer did not parse).
        xy: (x, y) in pixels of the original query image, clipped to [0, width] x [0, height] (the crop
            may reach past the image); None for semantic answers or unparsed ones.
        xy_normalized: (x, y) in the model crop frame, each in [0, 1]; None likewise.
        score: confidence in [0, 1], the geometric mean of token probabilities: for detections over the
            tokens of the informative coordinate digits only (the three decimals of x and of y, not the
            leading "0"/"1", punctuation or semantics); for semantic answers over all answer tokens;
            0 when the answer did not parse.
        parsed: whether the answer followed the protocol.
        error: why it did not parse, else None.
        raw: the raw generated answer.
    """

    index: int
    task: str
    query: str | None
    text: str | None
    xy: tuple[float, float] | None
    xy_normalized: tuple[float, float] | None
    score: float
    parsed: bool
    error: str | None
    raw: str

    @property
    def name(self) -> str | None:
        """The requested name when there was one, else the semantics the model gave."""
        return self.query if self.query is not None else self.text

    def to_dict(self) -> dict:
        return {**asdict(self), "name": self.name}


def as_point(value, what: str) -> tuple[float, float]:
    if isinstance(value, (str, bytes)):  # "12" would otherwise iterate into the point (1, 2)
        raise ValueError(f"{what} must be a pair of numbers (x, y), not the text {value!r}")
    try:
        x, y = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a pair of numbers (x, y); got {value!r}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"{what} has non-finite coordinates: {value!r}")
    return x, y


def is_point(value) -> bool:
    return (isinstance(value, (tuple, list, np.ndarray)) and len(value) == 2
            and all(isinstance(v, (int, float, np.number)) for v in value))


def point_in_crop(point, prepared: PreparedImage, what: str) -> tuple[float, float]:
    """A pixel point of the image as (u, v) in the model crop; ValueError when outside the image or the crop."""
    x, y = as_point(point, what)
    if not (0 <= x <= prepared.width and 0 <= y <= prepared.height):
        raise ValueError(f"{what} ({x:g}, {y:g}) is outside the {prepared.width}x{prepared.height} image")
    if not prepared.crop.contains((x, y)):
        raise ValueError(f"{what} ({x:g}, {y:g}) is outside the model crop around the bbox")
    u, v = prepared.crop.to_crop((x, y))
    return float(u), float(v)


def answer_grammar(model, processor, constrained: bool):
    """The `AnswerGrammar` that masks decoding (constraints.py), or None for free decoding."""
    # the grammar encodes KptLLM++'s "semantics [x, y]" answers; other protocols decode freely
    if not constrained or processor.protocol.name != DEFAULT_PROTOCOL:
        return None
    return grammar_for(processor, model.language_model.get_output_embeddings().weight.shape[0])


def read_answer(processor, index: int, task: Task, query, ids: list[int], probs: list[float],
                prepared: PreparedImage) -> KeypointResult:
    """One decoded row (token ids and their probabilities) as a result in pixels of `prepared`'s image."""
    raw = processor.decode(ids)
    parsed = processor.protocol.parse(raw, task, query)
    query = None if query is None else " ".join(query.split())
    if not isinstance(parsed, ParsedAnswer):
        return KeypointResult(index, task.value, query, None, None, None, 0.0, False, parsed.reason.value, raw)
    xy = xy_norm = None
    if parsed.xy is not None:
        xy_norm = (float(parsed.xy[0]), float(parsed.xy[1]))
        px, py = prepared.crop.to_image(xy_norm)  # the crop may reach past the image: clip to it
        xy = (min(max(float(px), 0.0), float(prepared.width)), min(max(float(py), 0.0), float(prepared.height)))
    protocol = processor.protocol
    score = protocol.score([processor.tokenizer.decode([i]) for i in ids], probs, task) if protocol.scores_pieces else None
    if score is None:
        score = answer_score(processor, ids, probs, coordinates_only=task.has_coordinates)
    return KeypointResult(index, task.value, query, parsed.semantics, xy, xy_norm, score, True, None, raw)


def answer_score(processor, ids: list[int], probs: list[float], coordinates_only: bool) -> float:
    """Geometric mean of token probabilities.

    Detections: only the tokens that write the informative coordinate digits, the three decimals of
    x and of y; the leading "0"/"1", the point, brackets, comma and semantics are near-certain or
    carry no location and would dilute the score. Semantic answers: every answer token.
    """
    selected = list(probs)
    if coordinates_only:
        # the coordinates end the answer: read from the last token that writes a "[" (a fraction of the
        # answer's prefixes to decode), and from the start when no coordinates show there
        start = _last_bracket_token(processor, ids)
        selected = _coordinate_digit_probs(processor, ids[start:], probs[start:])
        if selected is None and start > 0:
            selected = _coordinate_digit_probs(processor, ids, probs)
    if not selected:
        return 0.0
    return float(math.exp(sum(math.log(max(p, 1e-12)) for p in selected) / len(selected)))


def _last_bracket_token(processor, ids: list[int]) -> int:
    """Index of the last token whose vocabulary entry holds "[" (0 when none)."""
    pieces = processor.tokenizer.convert_ids_to_tokens([int(i) for i in ids])
    return next((k for k in range(len(pieces) - 1, -1, -1) if pieces[k] is not None and "[" in pieces[k]), 0)


def _coordinate_digit_probs(processor, ids: list[int], probs: list[float]) -> list[float] | None:
    """The probabilities of the tokens that write the last `[d.ddd, d.ddd]`'s decimals in the text of `ids`;
    None when that text holds no coordinates."""
    spans, text = [], ""
    for longer in processor.decode_prefixes(ids):  # character span of each token in the decoded text
        spans.append((len(text), len(longer)) if longer.startswith(text) else (len(longer), len(longer)))
        text = longer
    matches = list(_COORDINATE_DIGITS.finditer(text))
    if not matches:
        return None
    digits = set(range(*matches[-1].span("x"))) | set(range(*matches[-1].span("y")))
    return [p for (start, end), p in zip(spans, probs) if digits.intersection(range(start, end))]
