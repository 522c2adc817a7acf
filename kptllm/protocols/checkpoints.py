"""Per-checkpoint text protocols: which prompt a checkpoint was trained on and how its answers read.

A checkpoint's `KptLLMConfig.protocol` names one of these (default "kptllm", the identify-then-detect
protocol of `kptllm.protocols.protocol`); the processor tokenises and the predictor parses and scores through
it, so one predictor, runner and demo serve every checkpoint. The crop rule (padding, fill colour,
interpolation) and the image normalisation live in the config next to it.

    protocol = get_protocol(config)
    protocol.supported_tasks            # frozenset of Task
    protocol.prefix                     # text with one <image>
    protocol.conversation(task, text)   # Conversation(prefix, query)
    protocol.tokenize(tokenizer, text, first=...)
    protocol.parse(raw, task, query)    # ParsedAnswer | ParseFailure
"""

from __future__ import annotations

import re

from .protocol import (IMAGE_TOKEN, PREFIX, Conversation, ParseError, ParsedAnswer, ParseFailure, Task,
                       build_conversation, clean_text, parse_answer)

DEFAULT_PROTOCOL = "kptllm"


class KptLLMProtocol:
    """KptLLM++: system prompt, `<image>` / `<kpt>` placeholders, answers "semantics [x, y]"."""

    name = DEFAULT_PROTOCOL
    supported_tasks = frozenset(Task)
    prefix = PREFIX
    max_new_tokens: int | None = None  # None: the predictor's own limit

    def __init__(self, options: dict | None = None):
        self.options = dict(options or {})

    def check_task(self, task: Task | str) -> Task:
        task = Task(task)
        if task not in self.supported_tasks:
            names = ", ".join(sorted(t.value for t in self.supported_tasks))
            raise ValueError(f"this {self.name} checkpoint cannot do the {task.value} task (it supports: {names})")
        return task

    def conversation(self, task: Task | str, text: str | None = None) -> Conversation:
        return build_conversation(self.check_task(task), text=text)

    def tokenize(self, tokenizer, text: str, first: bool = False) -> list[int]:
        """Token ids of one separately tokenised piece (no BOS/EOS)."""
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def parse(self, raw: str, task: Task | str, query: str | None = None) -> ParsedAnswer | ParseFailure:
        return parse_answer(raw, task)

    scores_pieces = False  # True: `score` reads the generated pieces (decoded one by one only then)

    def score(self, pieces: list[str], probs: list[float], task: Task) -> float | None:
        """Confidence from the generated pieces; None: the predictor's default score."""
        return None


class LocLLMProtocol(KptLLMProtocol):
    """LocLLM (CVPR 2024), as converted by `kptllm convert locllm`.

    Prompt, exactly as LocLLM's `conv_keypoint` builds it (no system prompt, BOS added by the tokenizer):

        "Image: " + N x <image> + "\\nKeypoint: {description}\\nQuestion: Where is the {name} of this person
        in this image? Please provide its coordinates.\\nAnswer:"

    transformers 4.31's slow Llama tokenizer split the text on the added image token and stripped the
    whitespace on both sides of it (so "Image:" and "Keypoint: ..." with no newline in between), then
    SentencePiece-encoded each chunk; with `legacy=False` a chunk after the image token loses the dummy
    "▁" of its first piece. `tokenize` reproduces that. Answers are "[x,y]" (3 decimals, no name) in
    the 224 px crop frame; 13 new tokens, greedy; the score is the mean probability of the number tokens.

    Options (stored in the checkpoint config): `descriptions` {name: description} of the keypoints it was
    trained on (read from LocLLM's source at conversion time), `legacy_tokenizer` (bool).
    """

    name = "locllm"
    supported_tasks = frozenset({Task.TEXT})
    prefix = "Image: " + IMAGE_TOKEN + "\n"
    max_new_tokens = 13
    QUESTION = "Where is the {name} of this person in this image? Please provide its coordinates."

    def __init__(self, options: dict | None = None):
        super().__init__(options)
        descriptions = self.options.get("descriptions")
        if not isinstance(descriptions, dict) or not descriptions:
            raise ValueError("a locllm protocol needs protocol_options['descriptions'] (keypoint name -> description)")
        self.descriptions = {self._key(k): (k, v) for k, v in descriptions.items()}
        self.legacy = bool(self.options.get("legacy_tokenizer", True))

    @staticmethod
    def _key(name: str) -> str:
        return " ".join(name.replace("_", " ").lower().split())

    def keypoint(self, text: str | None) -> tuple[str, str]:
        """(LocLLM's name, its description) for a user keypoint name; ValueError for names it was not trained on."""
        cleaned = clean_text(text if text is not None else "")
        found = self.descriptions.get(self._key(cleaned))
        if found is None:
            known = ", ".join(name for name, _ in self.descriptions.values())
            raise ValueError(f"this locllm checkpoint only knows the keypoints: {known}; got {cleaned!r}")
        return found

    def conversation(self, task: Task | str, text: str | None = None) -> Conversation:
        self.check_task(task)
        name, description = self.keypoint(text)
        query = f"\nKeypoint: {description}\nQuestion: {self.QUESTION.format(name=name)}\nAnswer:"
        return Conversation(prefix=self.prefix, query=query)

    def tokenize(self, tokenizer, text: str, first: bool = False) -> list[int]:
        """4.31 slow-tokenizer ids of `text`; `first=False`: the text follows the image token."""
        ids: list[int] = []
        chunks = text.split(IMAGE_TOKEN)
        image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        for k, chunk in enumerate(chunks):
            if k:
                ids.append(image_id)
            after_image = k > 0 or not first
            if k < len(chunks) - 1:  # whitespace next to the image token was stripped
                chunk = chunk.rstrip()
            if after_image:
                chunk = chunk.lstrip()
            if not chunk:
                continue
            pieces = tokenizer.tokenize(chunk)  # SentencePiece: the chunk's first piece has the dummy "▁"
            if not self.legacy and after_image and pieces and pieces[0].startswith("▁"):
                pieces = ([pieces[0][1:]] if len(pieces[0]) > 1 else []) + pieces[1:]
            ids += [tokenizer.convert_tokens_to_ids(p) for p in pieces]
        return ids

    _ANSWER = re.compile(r"^\[\s*(?P<x>\d+\.\d+)\s*,\s*(?P<y>\d+\.\d+)\s*\]$")

    def parse(self, raw: str, task: Task | str, query: str | None = None) -> ParsedAnswer | ParseFailure:
        if not isinstance(raw, str) or not raw.strip():
            return ParseFailure(ParseError.EMPTY, raw if isinstance(raw, str) else repr(raw))
        text = raw.strip()
        match = self._ANSWER.match(text)
        if match is None:
            return ParseFailure(ParseError.MALFORMED_COORDINATES if "[" in text else ParseError.NO_COORDINATES, raw)
        x, y = float(match.group("x")), float(match.group("y"))
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            return ParseFailure(ParseError.OUT_OF_RANGE, raw)
        semantics = self.keypoint(query)[0] if query is not None else "keypoint"
        return ParsedAnswer(semantics=semantics, xy=(x, y))

    scores_pieces = True

    def score(self, pieces: list[str], probs: list[float], task: Task) -> float | None:
        """LocLLM's confidence: the mean max-probability of the tokens of each number, averaged over x and y."""
        numbers: list[list[float]] = []
        current: list[float] | None = None
        seen_bracket = False
        for piece, prob in zip(pieces, probs):
            piece = piece.replace("▁", " ").strip()
            seen_bracket = seen_bracket or "[" in piece
            if seen_bracket and piece and all(c.isdigit() or c == "." for c in piece):
                current = [] if current is None else current
                current.append(prob)
            elif current is not None:
                numbers.append(current)
                current = None
        if current is not None:
            numbers.append(current)
        numbers = numbers[:2]
        if not numbers:
            return 0.0
        return float(sum(sum(n) / len(n) for n in numbers) / len(numbers))


PROTOCOLS = {KptLLMProtocol.name: KptLLMProtocol, LocLLMProtocol.name: LocLLMProtocol}


def get_protocol(config) -> KptLLMProtocol:
    """The protocol object of a `KptLLMConfig` (its `protocol` and `protocol_options` fields)."""
    name = getattr(config, "protocol", None) or DEFAULT_PROTOCOL
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(sorted(PROTOCOLS))}")
    return PROTOCOLS[name](getattr(config, "protocol_options", None))


__all__ = ["DEFAULT_PROTOCOL", "KptLLMProtocol", "LocLLMProtocol", "PROTOCOLS", "get_protocol"]
