"""The text protocol: the single source of truth for prompts, answers and parsing.

Training, inference and tests all build their text here. A conversation is three pieces that are
tokenised separately and concatenated, so the token boundaries are the same everywhere:

    prefix  = SYSTEM + " USER: <image>\\n"                   (shared by every keypoint of one image)
    query   = instruction + " ASSISTANT:"                     (one per keypoint)
    answer  = " " + semantics [+ " [x, y]"]  then EOS          (what the model generates)

Coordinates are normalised to the model's input crop, x then y, in [0, 1], written with exactly three
decimals: ``left eye [0.412, 0.305]``. Answers put the semantics first, then the location
(identify-then-detect, paper Sec. 3.4).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import Enum

IMAGE_TOKEN = "<image>"
KPT_TOKEN = "<kpt>"
SPECIAL_TOKENS = (IMAGE_TOKEN, KPT_TOKEN)

SYSTEM = "A chat between a user and an assistant that understands object keypoints."
PREFIX = f"{SYSTEM} USER: {IMAGE_TOKEN}\n"
ASSISTANT = " ASSISTANT:"

MAX_TEXT_CHARS = 200  # longest keypoint name or description accepted in a prompt
DECIMALS = 3


class Task(str, Enum):
    SEMANTIC = "semantic"  # (a) image + point -> what the keypoint is
    VISUAL = "visual"  # (b) support image + point -> semantics and location in the query
    TEXT = "text"  # (c) keypoint name/description -> location
    VISUAL_TEXT = "visual_text"  # (b)+(c), paper Tab. 15

    @property
    def has_coordinates(self) -> bool:
        return self is not Task.SEMANTIC

    @property
    def has_kpt_prompt(self) -> bool:
        return self in (Task.SEMANTIC, Task.VISUAL, Task.VISUAL_TEXT)

    @property
    def has_text_prompt(self) -> bool:
        return self in (Task.TEXT, Task.VISUAL_TEXT)


_INSTRUCTIONS = {
    Task.SEMANTIC: f"Which keypoint of the object is marked by {KPT_TOKEN}? Answer with its name.",
    Task.VISUAL: (f"The keypoint {KPT_TOKEN} is marked on a support example of this kind of object. "
                  "Identify it, then locate it in this image."),
    Task.TEXT: "Find the {text} in this image. Identify it, then locate it.",
    Task.VISUAL_TEXT: (f"The keypoint {KPT_TOKEN} is marked on a support example of this kind of object; "
                       "it is the {text}. Identify it, then locate it in this image."),
}


@dataclass(frozen=True)
class Conversation:
    """The three separately tokenised pieces of one training or inference sequence."""

    prefix: str
    query: str
    answer: str | None = None


def _is_control_character(char: str) -> bool:
    """Control (C0, C1), format (bidi overrides, zero-width space, BOM) or lone surrogate, other than whitespace
    (collapsed, never rejected) and the zero-width joiner of emoji sequences."""
    return unicodedata.category(char) in ("Cc", "Cf", "Cs") and not char.isspace() and char != "\u200d"


def _has_control_characters(text: str) -> bool:
    return any(_is_control_character(c) for c in text)


def clean_text(text: str, what: str = "keypoint text") -> str:
    """Validate and normalise a user keypoint name/description (collapse whitespace).

    Raises ValueError for non-strings, empty text, text over MAX_TEXT_CHARS, control characters,
    brackets (reserved for coordinates) and the placeholder tokens.
    """
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a string, got {type(text).__name__}")
    cleaned = " ".join(text.split())
    if not cleaned:
        raise ValueError(f"{what} is empty")
    if len(cleaned) > MAX_TEXT_CHARS:
        raise ValueError(f"{what} is {len(cleaned)} characters long; the limit is {MAX_TEXT_CHARS}")
    if _has_control_characters(cleaned):
        raise ValueError(f"{what} contains control characters")
    if "[" in cleaned or "]" in cleaned:
        raise ValueError(f"{what} must not contain '[' or ']' (reserved for coordinates)")
    for token in SPECIAL_TOKENS:
        if token in cleaned:
            raise ValueError(f"{what} must not contain the reserved token {token}")
    return cleaned


def format_coordinate(value: float) -> str:
    """One normalised coordinate as text, e.g. 0.4123 -> '0.412'. Must lie in [0, 1]."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"normalised coordinate {value} is outside [0, 1]")
    return f"{value:.{DECIMALS}f}"


def format_answer(semantics: str, xy: tuple[float, float] | None = None) -> str:
    """The target answer: semantics, then (for detection tasks) ``[x, y]`` in the crop frame."""
    semantics = clean_text(semantics, "semantics")
    if xy is None:
        return semantics
    return f"{semantics} [{format_coordinate(xy[0])}, {format_coordinate(xy[1])}]"


def build_conversation(task: Task | str, text: str | None = None, semantics: str | None = None,
                       xy: tuple[float, float] | None = None) -> Conversation:
    """Prompt (and, when `semantics` is given, target answer) for one keypoint.

    Args:
        task: which task (a, b, c or b+c).
        text: keypoint name/description; required for TEXT and VISUAL_TEXT, ignored otherwise.
        semantics: target semantics for training; None at inference.
        xy: target location in the crop frame for detection tasks.
    """
    task = Task(task)
    if task.has_text_prompt:
        instruction = _INSTRUCTIONS[task].format(text=clean_text(text if text is not None else ""))
    else:
        instruction = _INSTRUCTIONS[task]
    answer = None
    if semantics is not None:
        if task.has_coordinates and xy is None:
            raise ValueError(f"a {task.value} answer needs a location")
        answer = " " + format_answer(semantics, xy if task.has_coordinates else None)
    return Conversation(prefix=PREFIX, query=instruction + ASSISTANT, answer=answer)


class ParseError(str, Enum):
    EMPTY = "empty answer"
    NO_COORDINATES = "no coordinates in the answer"
    MALFORMED_COORDINATES = "coordinates are not '[x.xxx, y.yyy]'"
    OUT_OF_RANGE = "coordinates outside [0, 1]"
    NO_SEMANTICS = "no semantics before the coordinates"
    UNEXPECTED_COORDINATES = "coordinates in a semantic answer"
    INVALID_TEXT = "the answer contains placeholder tokens"


@dataclass(frozen=True)
class ParsedAnswer:
    """A well-formed answer. `xy` is in the normalised crop frame (None for semantic answers)."""

    semantics: str
    xy: tuple[float, float] | None


@dataclass(frozen=True)
class ParseFailure:
    """A malformed answer; `raw` is kept so nothing is lost."""

    reason: ParseError
    raw: str


_NUMBER = r"\d+(?:\.\d+)?"
_COORDS_STRICT = re.compile(r"^(?P<sem>.*?)\s*\[(?P<x>\d\.\d{3}), (?P<y>\d\.\d{3})\]$", re.S)
_COORDS_LOOSE = re.compile(r"\[\s*-?" + _NUMBER + r"\s*,\s*-?" + _NUMBER + r"\s*\]")


def parse_answer(raw: str, task: Task | str) -> ParsedAnswer | ParseFailure:
    """Parse a generated answer strictly. Never raises, never guesses: anything off is a ParseFailure.

    Control and format characters in the text (a zero-width space, a bidi override, a C1 control: the
    model can write them byte by byte) are shown as U+FFFD in the semantics, never passed on hidden.
    """
    task = Task(task)
    if not isinstance(raw, str):
        return ParseFailure(ParseError.EMPTY, repr(raw))
    text = "".join("\ufffd" if _is_control_character(c) else c for c in raw.strip())
    if not text:
        return ParseFailure(ParseError.EMPTY, raw)
    if any(token in text for token in SPECIAL_TOKENS):
        return ParseFailure(ParseError.INVALID_TEXT, raw)
    if not task.has_coordinates:
        if "[" in text or "]" in text:
            return ParseFailure(ParseError.UNEXPECTED_COORDINATES, raw)
        return ParsedAnswer(semantics=" ".join(text.split()), xy=None)
    match = _COORDS_STRICT.match(text)
    if match is None:
        reason = ParseError.MALFORMED_COORDINATES if ("[" in text or _COORDS_LOOSE.search(text)) else ParseError.NO_COORDINATES
        return ParseFailure(reason, raw)
    semantics = " ".join(match.group("sem").split())
    if not semantics:
        return ParseFailure(ParseError.NO_SEMANTICS, raw)
    if "[" in semantics or "]" in semantics:
        return ParseFailure(ParseError.MALFORMED_COORDINATES, raw)
    x, y = float(match.group("x")), float(match.group("y"))
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        return ParseFailure(ParseError.OUT_OF_RANGE, raw)
    return ParsedAnswer(semantics=semantics, xy=(x, y))
