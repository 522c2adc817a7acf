"""Constrained decoding of answers: free-text semantics, then coordinates that always parse.

A detection answer is ``semantics [0.ddd, 0.ddd]`` (protocol.py). Once a row's text reaches ``[`` (or
when its token budget would otherwise run out), only tokens that continue the grammar

    "[" C ", " C "]"  then EOS,    C = "0." d d d  |  "1.000"

are allowed, so every detection answer parses and both values lie in [0, 1]. Before the bracket the
semantics are free text; only what would make the answer unparseable is masked (``]``, the placeholder
strings ``<image>`` / ``<kpt>`` even when spelled over several tokens, an empty semantics, EOS). A semantic
answer (task (a)) is free text that must be non-empty and bracket-free. Control and format characters
are not masked: byte-fallback tokens can only be judged whole once joined, so the parser shows such
characters as U+FFFD instead of refusing the answer (protocol.parse_answer).

The grammar works on each token's *decoded text* (the processor's `decode` of an anchor token plus the
token, minus the anchor), so it holds for any tokenizer: digits split one per token (Llama) or merged
(``"412"``, ``" [0."``). Tokens that decode to nothing (specials skipped by `decode`) are neutral: allowed
anywhere, they do not move the grammar. With greedy decoding this gives one guarantee that the tests
check: whenever the unconstrained answer already parsed, the constrained one is the same token for
token (every token on a parseable path is allowed, and the budget rule below only bites on paths that
would not have finished).

Budget: `need[m]` is the fewest tokens that finish from mode `m`. A row with `r` tokens left and
`r <= need[m]` may only take tokens on a shortest finishing path, so the answer completes within
`max_new_tokens` when `max_new_tokens >= need[start]`.

Everything is precomputed per tokenizer into `[M, V]` tables (M ~ 30 modes), so a decoding step is two
gathers on the device: no Python per row, CUDA-graph friendly.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import torch

from ..protocols.protocol import SPECIAL_TOKENS

# Free-text modes (shared layout: these ids are fixed; coordinate states follow).
DETECT_EMPTY, DETECT_FREE, SEMANTIC_EMPTY, SEMANTIC_FREE, DETECT_ACCEPT = range(5)
_FIRST_COORD = 5
_UNREACHABLE = 10**6


def _coordinate_states() -> tuple[dict, dict]:
    """Character DFA of `C ", " C "]"` after "[". Returns (state -> id, (id, char) -> id); ACCEPT is DETECT_ACCEPT."""
    ids: dict = {}
    edges: dict = {}

    def state_id(state) -> int:
        if state == "accept":
            return DETECT_ACCEPT
        if state not in ids:
            ids[state] = _FIRST_COORD + len(ids)
        return ids[state]

    def step(state, char):
        kind = state[0]
        if kind in ("x", "y"):
            _, pos, one = state
            if pos == 0:
                return (kind, 1, char == "1") if char in "01" else None
            if pos == 1:
                return (kind, 2, one) if char == "." else None
            if char in ("0" if one else "0123456789"):
                if pos < 4:
                    return (kind, pos + 1, one)
                return ("sep", 0) if kind == "x" else ("close",)
            return None
        if kind == "sep":
            if state[1] == 0:
                return ("sep", 1) if char == "," else None
            return ("y", 0, False) if char == " " else None
        if kind == "close":
            return "accept" if char == "]" else None
        return None

    start = ("x", 0, False)
    todo, seen = [start], {start}
    state_id(start)
    while todo:
        state = todo.pop()
        for char in "0123456789., ]":
            nxt = step(state, char)
            if nxt is None:
                continue
            edges[(state_id(state), char)] = state_id(nxt)
            if nxt != "accept" and nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return ids, edges


_STATE_IDS, _EDGES = _coordinate_states()
COORD_START = _STATE_IDS[("x", 0, False)]
# Free text that ends with the start of a placeholder ("... <kp") must remember it, so that a placeholder
# spelled over several tokens is caught: one DETECT_FREE and one SEMANTIC_FREE copy per pending start.
_PENDING = sorted({token[:k] for token in SPECIAL_TOKENS for k in range(1, len(token))})
_PENDING_INDEX = {pending: k for k, pending in enumerate(_PENDING)}
_PENDING_BASE = _FIRST_COORD + len(_STATE_IDS)
NUM_MODES = _PENDING_BASE + 2 * len(_PENDING)


def _free_mode(detect: bool, pending: str) -> int:
    """The free-text mode of a filled semantics whose text ends with `pending` (a placeholder's start, or "")."""
    if not pending:
        return DETECT_FREE if detect else SEMANTIC_FREE
    return _PENDING_BASE + 2 * _PENDING_INDEX[pending] + (0 if detect else 1)


_FREE_SOURCES = ([(DETECT_EMPTY, True, ""), (DETECT_FREE, True, ""), (SEMANTIC_EMPTY, False, ""), (SEMANTIC_FREE, False, "")]
                 + [(_free_mode(detect, q), detect, q) for q in _PENDING for detect in (True, False)])
_FINISHED = [DETECT_ACCEPT, SEMANTIC_FREE] + [_free_mode(False, q) for q in _PENDING]  # where EOS may come
assert all(token.startswith("<") for token in SPECIAL_TOKENS)  # what _scan's fast path relies on


def _scan(pending: str, text: str) -> str | None:
    """Free text ending in `pending` continued by `text`: None if that spells a placeholder, else the new pending start."""
    joined = pending + text
    if "<" not in text:  # fast path (most tokens): a placeholder can only start where `pending` does
        if any(joined.startswith(token) for token in SPECIAL_TOKENS):
            return None
        return joined if joined in _PENDING_INDEX else ""
    if any(token in joined for token in SPECIAL_TOKENS):
        return None
    for start in range(max(0, len(joined) - max(map(len, _PENDING), default=0)), len(joined)):
        if joined[start:] in _PENDING_INDEX:
            return joined[start:]
    return ""


def _walk(state: int, text: str) -> int | None:
    for char in text:
        state = _EDGES.get((state, char))
        if state is None:
            return None
    return state


def token_texts(processor, vocab_size: int) -> list[str]:
    """Each token's text as it appears inside a decoded answer (anchor trick: keeps SentencePiece's leading space)."""
    tokenizer = processor.tokenizer
    anchor = tokenizer("a", add_special_tokens=False)["input_ids"][:1]
    base = processor.decode(anchor)
    texts = []
    for token in range(vocab_size):
        text = processor.decode(anchor + [token])
        texts.append(text[len(base):] if text.startswith(base) else text)
    return texts


@dataclass
class AnswerGrammar:
    """Precomputed tables over the vocabulary.

    Attributes:
        allowed: `[M, V]` bool, tokens allowed in each mode.
        forced: `[M, V]` bool, tokens on a shortest finishing path (used when the budget is tight).
        next_mode: `[M, V]` long, mode after each token (-1 where not allowed).
        need: `[M]` long, fewest tokens that finish from each mode (0 for finished modes).
        eos_token_id: EOS, allowed only in finished modes (DETECT_ACCEPT, SEMANTIC_FREE and its pending copies).
        follow: `[M]` long, the one token a mode allows besides the neutral ones (and EOS), or -1: what the
            model will almost surely pick next (the "." after a coordinate's first digit, ", " and "]").
            Decoding may feed it early and verify it (generation.py); it is a guess, never a constraint.
    """

    allowed: torch.Tensor
    forced: torch.Tensor
    next_mode: torch.Tensor
    need: torch.Tensor
    eos_token_id: int
    follow: torch.Tensor | None = None

    def __post_init__(self):
        if self.follow is None:
            self.follow = _follow_tokens(self.allowed, self.next_mode, self.eos_token_id)

    @staticmethod
    def start_mode(has_coordinates: bool) -> int:
        return DETECT_EMPTY if has_coordinates else SEMANTIC_EMPTY

    def to(self, device) -> "AnswerGrammar":
        if self.allowed.device == torch.device(device):
            return self
        return AnswerGrammar(self.allowed.to(device), self.forced.to(device), self.next_mode.to(device),
                             self.need.to(device), self.eos_token_id, self.follow.to(device))

    def allowed_tokens(self, modes: torch.Tensor, remaining: int) -> torch.Tensor:
        """`[B, V]` bool mask of allowed tokens for rows in `modes [B]` with `remaining` tokens left (this one included)."""
        tight = (self.need[modes] >= remaining)[:, None]
        return torch.where(tight, self.forced[modes], self.allowed[modes])

    @classmethod
    def build(cls, texts: list[str | None], eos_token_id: int) -> "AnswerGrammar":
        """`texts[t]`: token t's decoded text ("" = neutral, None = never allowed)."""
        vocab = len(texts)
        # built in numpy (a torch scalar write costs ~50x more; 32 k tokens x ~50 modes)
        next_mode = np.full((NUM_MODES, vocab), -1, dtype=np.int64)
        every_mode = np.arange(NUM_MODES)
        for token, text in enumerate(texts):
            if token == eos_token_id:
                for mode in _FINISHED:
                    next_mode[mode, token] = mode
                continue
            if text is None:
                continue
            if text == "":  # neutral (a special token that decode skips)
                next_mode[:, token] = every_mode
                continue
            free, _, after = text.partition("[")
            coordinates = _walk(COORD_START, after) if "[" in text else None
            if "]" not in free:
                tails = {pending: _scan(pending, free) for pending in ("", *_PENDING)}
                filled_text = bool(free.strip())
                for mode, detect, pending in _FREE_SOURCES:
                    tail = tails[pending]
                    if tail is None:
                        continue
                    filled = filled_text or mode not in (DETECT_EMPTY, SEMANTIC_EMPTY)
                    if "[" not in text:
                        next_mode[mode, token] = _free_mode(detect, tail) if filled else mode
                    elif detect and filled and coordinates is not None:
                        next_mode[mode, token] = coordinates
            for mode in range(_FIRST_COORD, _PENDING_BASE):
                target = _walk(mode, text)
                if target is not None:
                    next_mode[mode, token] = target
            if text.isspace():  # the parser strips trailing whitespace
                next_mode[DETECT_ACCEPT, token] = DETECT_ACCEPT
        next_mode = torch.from_numpy(next_mode)
        allowed = next_mode >= 0
        # need: shortest path (in tokens) to a finished mode over non-neutral, non-EOS moves
        need = [_UNREACHABLE] * NUM_MODES
        for mode in _FINISHED:
            need[mode] = 0
        moves = next_mode.clone()
        moves[:, eos_token_id] = -1
        moves[moves == torch.arange(NUM_MODES)[:, None]] = -1  # self-loops never shorten a path
        successors = [moves[m][moves[m] >= 0].unique().tolist() for m in range(NUM_MODES)]
        for _ in range(NUM_MODES):
            for mode in range(NUM_MODES):
                for target in successors[mode]:
                    need[mode] = min(need[mode], need[target] + 1)
        for mode in (DETECT_EMPTY, SEMANTIC_EMPTY):
            if need[mode] >= _UNREACHABLE:
                raise ValueError("this tokenizer cannot spell a complete answer (no digit / bracket tokens?)")
        need_t = torch.tensor(need, dtype=torch.long)
        target_need = need_t[next_mode.clamp(min=0)]
        forced = allowed & (target_need == (need_t - 1).clamp(min=0)[:, None]) & (next_mode != torch.arange(NUM_MODES)[:, None])
        # finished modes: the only way forward is EOS
        for mode in _FINISHED:
            forced[mode] = False
            forced[mode, eos_token_id] = True
        return cls(allowed, forced, next_mode, need_t, eos_token_id)


def _follow_tokens(allowed: torch.Tensor, next_mode: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """`[M]`: each mode's only allowed token that is neither neutral (a self-loop in every mode) nor EOS, else -1."""
    modes = torch.arange(next_mode.shape[0], device=next_mode.device)[:, None]
    neutral = (next_mode == modes).all(0)
    candidates = allowed & ~neutral[None]
    candidates[:, eos_token_id] = False
    only = candidates.sum(1) == 1
    return torch.where(only, candidates.long().argmax(1), torch.full_like(only, -1, dtype=torch.long))


_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def grammar_for(processor, vocab_size: int | None = None) -> AnswerGrammar:
    """The (cached) grammar of a processor's tokenizer; `vocab_size` = the LM head's width (may exceed the tokenizer's)."""
    vocab_size = vocab_size or len(processor.tokenizer)
    key = processor
    cached = _CACHE.get(key)
    if cached is not None and cached.allowed.shape[1] == vocab_size:
        return cached
    texts = token_texts(processor, min(vocab_size, len(processor.tokenizer)))
    texts += [None] * (vocab_size - len(texts))  # LM-head rows without a token: never allowed
    grammar = AnswerGrammar.build(texts, processor.eos_token_id)
    _CACHE[key] = grammar
    return grammar
