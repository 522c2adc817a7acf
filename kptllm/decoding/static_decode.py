"""Static-shape decoding for the engine, replayable as a CUDA graph (the GPU path of `generation.decode`).

On a GPU a decode step of a 7B model is launch-bound, not bandwidth-bound: ~20 small kernels per layer,
~60 ms a step eagerly, while reading the weights takes ~3 ms. A CUDA graph replays a recorded step with
one launch. Graphs need every shape and every tensor address to stay the same from step to step (and, to
be worth their capture, from call to call), so this path differs from the eager engine in four ways:

- rows are never dropped: a finished row keeps computing (on a GPU a step costs its weight reads, not its
  rows); its extra tokens come after its EOS and are cut off;
- each row attends over its whole KV buffer `[B, Hkv, capacity, d]`; the columns not yet written are
  masked out by `valid [B, capacity]`, which the step updates in place; the new column is written with
  `index_copy_` at a column held in a device tensor;
- rows are laid out densely, the same number per prefix (the largest group rounded up to 8; padding rows
  start from a real row's first token and are cut off), so batches of other sizes and mixes share a shape;
- prefixes, row KV, inputs and outputs live in buffers owned by a `_StaticState`, kept per shape
  (prefixes, rows per prefix, prefix length, capacity rounded up to 32, dtype, device) for later
  calls (least recently used dropped beyond 4 states or `KPTLLM_STATIC_CACHE_GB`, default 8 GB, of
  buffers; the newest is always kept).

Only the single-token steps are graphed; the suffix block (the per-keypoint instruction) is prefilled
eagerly, for the real rows only, straight into the same buffers (padding rows are computed and cut off:
they are not prefilled, which would cost ~30 % more prefill at 17 keypoints per prefix). A shape seen for
the first time costs a capture (two eager warm-up steps plus the recording); with the dense layout an
evaluation run meets a handful of shapes. Off a GPU, or with `use_graph=False`, the same static step runs
eagerly, which is how the CPU tests hold it to the naive path token for token.
"""

from __future__ import annotations

import os
import warnings
import weakref
from collections import OrderedDict

import torch

from ..modeling.shared_prefix import ATTENTION_NAME, PrefixKV, Rows, forward_rows, use_attention
from .decode_state import Generated, choose_tokens, collect, left_padded

CAPACITY_STEP = 32  # capacities are rounded up to this, so calls with slightly different prompts share a graph
GROUP_STEP = 8  # rows per prefix are padded to a multiple of this, so batches of other sizes share a graph
MAX_STATES = 4  # per language model
# Older states are dropped while the kept ones exceed this (the newest is always kept): at 7B one row's KV
# buffer is ~1 MB per layer, so an evaluation batch of 800 rows holds ~26 GB by itself.
CACHE_BYTES = int(float(os.environ.get("KPTLLM_STATIC_CACHE_GB", "8")) * 2 ** 30)

_states: "weakref.WeakKeyDictionary[torch.nn.Module, OrderedDict]" = weakref.WeakKeyDictionary()


def static_enabled(device) -> bool:
    """Whether `generation.decode(static=None)` takes this path. `KPTLLM_STATIC_DECODE`: `auto` (default) =
    on CUDA devices, except on ZeroGPU Spaces (`SPACES_ZERO_GPU` set: the GPU is attached per call and a
    graph kept between calls would outlive its device context); `1` = everywhere (off a GPU the static
    step runs eagerly: how the tests run the evaluation runner through it); `0` = never.
    `KPTLLM_CUDA_GRAPHS=0` is the same as `0`."""
    choice = os.environ.get("KPTLLM_STATIC_DECODE", "auto").strip().lower()
    if choice in ("0", "off", "false") or os.environ.get("KPTLLM_CUDA_GRAPHS", "1") == "0":
        return False
    if choice in ("1", "on", "true"):
        return True
    return torch.device(device).type == "cuda" and not os.environ.get("SPACES_ZERO_GPU")


class _StaticState:
    """The buffers (and the captured graph) of one decode shape; see the module docstring."""

    def __init__(self, language_model, base, prefix: PrefixKV, row_prefix: torch.Tensor, capacity: int,
                 dtype, use_graph: bool):
        self.language_model, self.base, self.dtype = language_model, base, dtype
        device = row_prefix.device
        num = row_prefix.shape[0]
        self.prefix = PrefixKV([torch.empty_like(k) for k in prefix.keys], [torch.empty_like(v) for v in prefix.values])
        self.rows = Rows(self.prefix, row_prefix, capacity)
        self.valid = torch.zeros(num, capacity, dtype=torch.bool, device=device)
        self.tokens = torch.zeros(num, dtype=torch.long, device=device)
        self.positions = torch.zeros(num, 1, dtype=torch.long, device=device)
        self.column = torch.zeros(1, dtype=torch.long, device=device)
        self.embed = language_model.get_input_embeddings()
        self.use_graph = use_graph
        self.graph = None
        self.logits = None
        kv = prefix.keys[0]  # [P, Hkv, Lp, d]
        per_layer = 2 * (prefix.count * kv.shape[2] + num * capacity) * kv.shape[1] * kv.shape[3] * kv.element_size()
        self.nbytes = per_layer * len(prefix.keys)  # prefix copies + row KV buffers

    def load(self, prefix: PrefixKV, row_prefix: torch.Tensor) -> None:
        """Copy this call's prefixes and row-to-prefix map into the buffers (same shapes, same addresses)."""
        for mine, theirs in zip(self.prefix.keys + self.prefix.values, prefix.keys + prefix.values):
            mine.copy_(theirs)
        self.rows.load_rows(row_prefix)
        self.rows.length = 0
        self.valid.zero_()

    def _compute(self) -> torch.Tensor:
        self.valid.index_fill_(1, self.column, True)
        inputs = self.embed(self.tokens)[:, None].to(self.dtype)
        return forward_rows(self.language_model, self.base, inputs, self.valid[:, None, None, :], self.positions, self.rows)

    def step(self) -> torch.Tensor:
        """Logits `[B, V]` of the tokens in `self.tokens` at `self.positions`, written at column `self.column`."""
        if not self.use_graph:
            return self._compute()
        if self.graph is None:
            try:
                self._capture()
            except Exception as err:  # noqa: BLE001 -- a step that cannot be captured (e.g. host syncs in a quantized matmul) still decodes, eagerly
                warnings.warn(f"CUDA graph capture failed ({err}); decoding eagerly", RuntimeWarning, stacklevel=2)
                self.use_graph = False
                return self._compute()
        self.graph.replay()
        return self.logits

    def _capture(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up runs write the same column with the same values: harmless
            for _ in range(2):
                self._compute()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.logits = self._compute()
        self.graph = graph


class _BlockRows(Rows):
    """The cache of the suffix-block prefill of the real rows: `update` writes their `[R, Hkv, W, d]` KV into
    the dense buffers of `target` at rows `slots [R]`, columns `[0, W)` (allocated there once, at the
    target's capacity: a captured graph reads those addresses), and attends over the block's own KV."""

    def __init__(self, prefix: PrefixKV, row_prefix: torch.Tensor, target: Rows, slots: torch.Tensor):
        super().__init__(prefix, row_prefix, capacity=0)
        self.target, self.slots = target, slots

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        target = self.target
        if target.keys[layer_idx] is None:
            b, h, _, d = key_states.shape
            shape = (target.row_prefix.shape[0], h, target.capacity, d)
            target.keys[layer_idx], target.values[layer_idx] = key_states.new_zeros(shape), value_states.new_zeros(shape)
        width = key_states.shape[2]
        target.keys[layer_idx][:, :, :width].index_copy_(0, self.slots, key_states)
        target.values[layer_idx][:, :, :width].index_copy_(0, self.slots, value_states)
        return key_states, value_states


def _state_for(language_model, base, prefix, row_prefix, per_prefix, capacity, dtype, use_graph) -> _StaticState:
    """The cached state of this shape (`per_prefix`: rows of each prefix in the dense layout), or a new one."""
    key = (per_prefix, capacity, dtype, str(row_prefix.device), tuple(prefix.keys[0].shape), use_graph)
    states = _states.setdefault(language_model, OrderedDict())
    state = states.pop(key, None)
    if state is None:
        state = _StaticState(language_model, base, prefix, row_prefix, capacity, dtype, use_graph)
        while states and (len(states) >= MAX_STATES or sum(s.nbytes for s in states.values()) + state.nbytes > CACHE_BYTES):
            states.popitem(last=False)
    states[key] = state
    return state


def _dense_rows(row_prefix: list[int], count: int, step: int = GROUP_STEP) -> tuple[list[int], list[int], int]:
    """Lay B rows out as a dense `[count, W]` grid, W = the largest group rounded up to `step`.

    Returns (source row of each grid slot, grid slot of each original row, W). A group is filled with copies
    of its first row; a prefix without rows borrows row 0 (computed and discarded either way)."""
    groups: list[list[int]] = [[] for _ in range(count)]
    for row, p in enumerate(row_prefix):
        groups[p].append(row)
    width = -(-max(len(g) for g in groups) // step) * step
    source, slot = [], [0] * len(row_prefix)
    for group in groups:
        for j in range(width):
            if j < len(group):
                slot[group[j]] = len(source)
            source.append(group[j] if j < len(group) else (group[0] if group else 0))
    return source, slot, width


@torch.no_grad()
def decode_static(language_model, base, prefix: PrefixKV, suffix_embeds: list[torch.Tensor], eos_token_id: int,
                  max_new_tokens: int, row_prefix: torch.Tensor, grammar=None, modes: torch.Tensor | None = None,
                  use_graph: bool = True) -> Generated:
    """`generation.decode` with static shapes (see the module docstring); same arguments, same result.

    `base` is the Llama-style decoder (`modeling.shared_prefix.decoder_parts`); `row_prefix [B]`, the grammar and its
    `modes [B]` are on the device (`decode` puts them there).
    """
    # a stable shape: every prefix gets the same number of rows (padding rows are cut off at the end)
    source, slot, per_prefix = _dense_rows(row_prefix.tolist(), prefix.count)
    device, dtype = suffix_embeds[0].device, suffix_embeds[0].dtype
    real_prefix = row_prefix
    row_prefix = torch.arange(prefix.count, device=device).repeat_interleave(per_prefix)
    src = torch.as_tensor(source, device=device)  # dense slot -> the real row it holds (or copies)
    real = torch.as_tensor(slot, device=device)  # real row -> its dense slot
    if modes is not None:
        modes = modes[src]
    num = len(source)
    block, lengths = left_padded(suffix_embeds)  # left-padded: every row's last suffix token at width - 1
    width = block.shape[1]
    capacity = -(-(width + max_new_tokens) // CAPACITY_STEP) * CAPACITY_STEP
    state = _state_for(language_model, base, prefix, row_prefix, per_prefix, capacity, dtype,
                       use_graph and device.type == "cuda")
    state.load(prefix, row_prefix)
    rows, valid = state.rows, state.valid

    valid[:, :width] = torch.arange(width, device=device)[None] >= (width - lengths[src])[:, None]
    causal = torch.ones(width, width, device=device, dtype=torch.bool).tril()
    positions = (prefix.length + valid[:, :width].long().cumsum(1) - 1).clamp(min=prefix.length)
    next_position = prefix.length + valid[:, :width].sum(1)

    out_tokens = torch.full((num, max_new_tokens), -1, dtype=torch.long, device=device)
    out_probs = torch.zeros(num, max_new_tokens, device=device)
    finished = torch.zeros(num, dtype=torch.bool, device=device)
    steps = 0
    with use_attention(language_model, ATTENTION_NAME):
        # the real rows' suffixes, their KV written straight into their dense slots; every slot starts from
        # its source row's logits (padding slots then decode from whatever KV their slots hold: rows are
        # independent and padding rows are cut off, so they need only be finite)
        logits = forward_rows(language_model, base, block, valid[real][:, None, None, :width] & causal[None, None],
                          positions[real], _BlockRows(state.prefix, real_prefix, rows, real))[src]
        rows.static_column = state.column
        try:
            for step in range(max_new_tokens):
                tokens, chosen, next_modes = choose_tokens(logits, grammar, modes, max_new_tokens - step)
                if grammar is not None:  # a finished row's mode stays (its later tokens are cut off anyway)
                    modes = torch.where(finished, modes, next_modes)
                out_tokens[:, step] = tokens
                out_probs[:, step] = chosen
                steps = step + 1
                finished |= tokens == eos_token_id
                if step == max_new_tokens - 1 or bool(finished[real].all()):
                    break
                state.tokens.copy_(tokens)
                state.positions.copy_(next_position[:, None])
                state.column.fill_(width + step)
                next_position = next_position + 1
                logits = state.step()
        finally:
            rows.static_column = None
    return collect(out_tokens[real], out_probs[real], steps, eos_token_id)
