"""Attention of many rows over shared prefixes, used by training (`KptLLMForKeypoints`'s shared-prefix loss)
and by both decoders (`decoding.generation`, `decoding.static_decode`): the prefix KV of each image, the
per-row KV and its attention over [own prefix | own rows], and the decoder's forward over the rows.

Shapes: prefix KV `[P, Hkv, Lp, d]` per layer (one per image); row KV `[B, Hkv, S, d]` per layer (suffix
and generated tokens only); `row_prefix [B]` says which prefix each row reads. See `decoding.generation` for why.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from transformers import AttentionInterface, DynamicCache

ATTENTION_NAME = "kptllm_shared_prefix"


@dataclass
class PrefixKV:
    """The KV cache of P prefixes of equal length: per layer `keys[l], values[l]` of shape `[P, Hkv, Lp, d]`."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def length(self) -> int:
        return self.keys[0].shape[2]

    @property
    def count(self) -> int:
        return self.keys[0].shape[0]

    @classmethod
    def from_cache(cls, cache: DynamicCache) -> "PrefixKV":
        """Views (no copy) of a `DynamicCache` filled by `prefill`."""
        return cls([layer.keys for layer in cache.layers], [layer.values for layer in cache.layers])

    @classmethod
    def cat(cls, prefixes: list["PrefixKV"]) -> "PrefixKV":
        """Stack several prefixes (one per image) into one `PrefixKV` (copies P x Lp, not per keypoint)."""
        if len(prefixes) == 1:
            return prefixes[0]
        layers = range(len(prefixes[0].keys))
        return cls([torch.cat([p.keys[i] for p in prefixes]) for i in layers],
                   [torch.cat([p.values[i] for p in prefixes]) for i in layers])


def fill_cache(language_model, prefix_embeds: torch.Tensor) -> DynamicCache:
    """Run the prefixes `[P, Lp, D]` once and return their KV cache (with gradients when enabled: training)."""
    cache = DynamicCache(config=language_model.config)
    language_model(inputs_embeds=prefix_embeds, cache=cache, use_cache=True, logits_to_keep=1)
    return cache


class Rows:
    """Per-row KV of the suffix and generated tokens, duck-typed as the `cache` the HF attention layers update.

    keys/values[l]: `[B, Hkv, capacity, d]`, preallocated (a static cache: no per-step concatenation).
    `groups [P, n]` lists each prefix's rows (padded by repeating a row), `slot [B]` each row's place in
    `groups.view(-1)`; `identity` marks the common case of one prefix shared by all rows.
    """

    def __init__(self, prefix: PrefixKV, row_prefix: torch.Tensor, capacity: int):
        self.prefix = prefix
        self.capacity = capacity
        self.length = 0  # columns written before the running forward
        self.keys: list[torch.Tensor | None] = [None] * len(prefix.keys)
        self.values: list[torch.Tensor | None] = [None] * len(prefix.keys)
        self.static_column: torch.Tensor | None = None  # static_decode: write here, return the whole buffer
        self.set_rows(row_prefix)

    def set_rows(self, row_prefix: torch.Tensor) -> None:
        self.row_prefix = row_prefix
        count = self.prefix.count
        num = row_prefix.shape[0]
        self.identity = count == 1
        if self.identity:
            return
        order = torch.argsort(row_prefix, stable=True)
        sizes = torch.bincount(row_prefix, minlength=count)
        width = max(int(sizes.max()), 1)
        starts = torch.cumsum(sizes, 0) - sizes
        rank = torch.arange(num, device=row_prefix.device) - starts[row_prefix[order]]
        groups = torch.zeros(count, width, dtype=torch.long, device=row_prefix.device)
        groups[row_prefix[order], rank] = order
        # pad each group with its first row (or row 0 for an empty group): computed and discarded
        first = groups[:, :1].expand(-1, width)
        column = torch.arange(width, device=row_prefix.device)[None]
        self.groups = torch.where(column < sizes[:, None], groups, first)
        self.slot = torch.empty(num, dtype=torch.long, device=row_prefix.device)
        self.slot[order] = row_prefix[order] * width + rank

    def load_rows(self, row_prefix: torch.Tensor) -> None:
        """`set_rows` that keeps the `groups`/`slot` tensors (their addresses) when the shapes agree (static_decode)."""
        old = (getattr(self, "groups", None), getattr(self, "slot", None))
        self.set_rows(row_prefix)
        if not self.identity and old[0] is not None and old[0].shape == self.groups.shape and old[1].shape == self.slot.shape:
            old[0].copy_(self.groups)
            old[1].copy_(self.slot)
            self.groups, self.slot = old

    def keep(self, index: torch.Tensor) -> None:
        """Keep only rows `index` (drop finished rows)."""
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            if k is not None:
                self.keys[i], self.values[i] = k.index_select(0, index), v.index_select(0, index)
        self.set_rows(self.row_prefix.index_select(0, index))

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        """Write the running forward's `[B, Hkv, T, d]` keys/values; return the row KV up to the current column."""
        if self.keys[layer_idx] is None:
            b, h, _, d = key_states.shape
            shape = (b, h, self.capacity, d)
            self.keys[layer_idx] = key_states.new_zeros(shape)
            self.values[layer_idx] = value_states.new_zeros(shape)
        if self.static_column is not None:
            self.keys[layer_idx].index_copy_(2, self.static_column, key_states)
            self.values[layer_idx].index_copy_(2, self.static_column, value_states)
            return self.keys[layer_idx], self.values[layer_idx]
        end = self.length + key_states.shape[2]
        self.keys[layer_idx][:, :, self.length:end] = key_states
        self.values[layer_idx][:, :, self.length:end] = value_states
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]

    def mask_bias(self, mask: torch.Tensor, groups: int, dtype) -> torch.Tensor:
        """Additive bias `[B, 1, g*T, S]` (0 / most negative) from the bool mask `[B, 1, T, S]`; built once per forward."""
        if self._bias is None or self._bias_source is not mask:
            b, _, t, s = mask.shape
            bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)
            self._bias = bias.expand(b, groups, t, s).reshape(b, 1, groups * t, s) if groups > 1 else bias
            self._bias_source = mask
        return self._bias

    _bias = _bias_source = None

    # A few attributes HF code may probe on a cache object.
    is_compileable = False

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.prefix.length + self.length

    # ------------------------------------------------------------ prefix grouping
    def to_groups(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, Hkv, M, *]` (M = heads-per-kv x T) -> `[P, Hkv, n*M, *]`: each prefix's rows along one axis."""
        b, h, m, last = x.shape
        if self.identity:
            return x.transpose(0, 1).reshape(1, h, b * m, last)
        g = x[self.groups]  # [P, n, Hkv, M, *]
        p, n = g.shape[:2]
        return g.transpose(1, 2).reshape(p, h, n * m, last)

    def from_groups(self, y: torch.Tensor, rows: int, m: int) -> torch.Tensor:
        """Inverse of `to_groups`: `[P, Hkv, n*M, *]` -> `[B, Hkv, M, *]`."""
        p, h, _, last = y.shape
        if self.identity:
            return y.reshape(h, rows, m, last).transpose(0, 1)
        y = y.reshape(p, h, -1, m, last).transpose(1, 2).reshape(-1, h, m, last)
        return y[self.slot]


def shared_prefix_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                             kptllm_rows: Rows | None = None, **kwargs):
    """Attention over [shared prefix | own suffix], eager (the HF attention-interface signature).

    query `[B, H, T, d]`; key/value `[B, Hkv, S, d]` (the rows' own KV from `Rows.update`);
    attention_mask `[B, 1, T, S]` bool (True = attend) over the row KV; the prefix is always visible.
    Returns `[B, T, H, d]`.
    """
    rows = kptllm_rows
    prefix_keys = rows.prefix.keys[module.layer_idx]  # [P, Hkv, Lp, d]
    prefix_values = rows.prefix.values[module.layer_idx]
    b, heads, t, d = query.shape
    kv_heads, lp = prefix_keys.shape[1], prefix_keys.shape[2]
    m = heads // kv_heads * t  # query heads h = kv * g + j share kv head kv (as repeat_kv)
    q = query.reshape(b, kv_heads, m, d) * scaling
    scores_prefix = rows.from_groups(torch.matmul(rows.to_groups(q), prefix_keys.transpose(-1, -2)), b, m)
    scores_rows = torch.matmul(q, key.transpose(-1, -2)) + rows.mask_bias(attention_mask, heads // kv_heads, q.dtype)
    weights = torch.softmax(torch.cat([scores_prefix, scores_rows], dim=-1), dim=-1, dtype=torch.float32).to(query.dtype)
    out = rows.from_groups(torch.matmul(rows.to_groups(weights[..., :lp]), prefix_values), b, m)
    out = out + torch.matmul(weights[..., lp:], value)
    return out.reshape(b, heads, t, d).transpose(1, 2), None


AttentionInterface.register(ATTENTION_NAME, shared_prefix_attention)


@contextlib.contextmanager
def use_attention(language_model, name: str):
    """Switch the LM's attention implementation for the duration of a decode (restored afterwards)."""
    config = language_model.config
    previous = config._attn_implementation_internal
    config._attn_implementation_internal = name
    try:
        yield
    finally:
        config._attn_implementation_internal = previous


def decoder_parts(language_model):
    """The Llama-style pieces (`model.layers`, `rotary_emb`, `norm`, `lm_head`) when present, else None."""
    base = getattr(language_model, "model", None)
    if base is None or not hasattr(language_model, "lm_head") or not all(
            hasattr(base, name) for name in ("layers", "rotary_emb", "norm")):
        return None
    return base


def forward_rows(language_model, base, inputs, mask, positions, rows) -> torch.Tensor:
    """Last-position logits `[B, V]` of `inputs [B, T, D]`.

    For Llama-style models the decoder layers are called directly: the model-level wrappers cost about
    1 ms a step, which is most of a step for small models. Other models take the ordinary forward.
    """
    if base is None:
        return language_model(inputs_embeds=inputs, attention_mask=mask, position_ids=positions, cache=rows,
                              use_cache=False, logits_to_keep=1, kptllm_rows=rows).logits[:, -1]
    return language_model.lm_head(base.norm(decoder_hidden(base, inputs, mask, positions, rows)[:, -1:]))[:, -1]


def decoder_hidden(base, inputs, mask, positions, rows) -> torch.Tensor:
    """Hidden states `[B, T, D]` (before the final norm) of `inputs [B, T, D]` through a Llama-style decoder
    `base` (`decoder_parts`), each row attending to its prefix and its own KV in `rows` (`Rows`)."""
    hidden = inputs
    rotary = base.rotary_emb(hidden, position_ids=positions)
    for layer in base.layers[:base.config.num_hidden_layers]:
        hidden = layer(hidden, attention_mask=mask, position_ids=positions, cache=rows, position_embeddings=rotary,
                       kptllm_rows=rows)
    return hidden
