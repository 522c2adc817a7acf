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
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaDecoderLayer, LlamaMLP, LlamaRMSNorm

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
    `groups.view(-1)`; `identity` marks the common case of one prefix shared by all rows, `in_order` rows
    that already come grouped (sorted by prefix, n each: an engine batch of images asked the same names).
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
        self.in_order = False
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
        # rows already sorted by prefix, as many for each: the groups are a view of the rows (no gathers)
        self.in_order = num == count * width and bool((row_prefix[1:] >= row_prefix[:-1]).all())

    def load_rows(self, row_prefix: torch.Tensor) -> None:
        """`set_rows` that keeps the `groups`/`slot` tensors (their addresses) when the shapes agree (static_decode)."""
        old = (getattr(self, "groups", None), getattr(self, "slot", None))
        self.set_rows(row_prefix)
        self.in_order = False  # a captured graph gathers through these tensors whatever the next call's order
        if not self.identity and old[0] is not None and old[0].shape == self.groups.shape and old[1].shape == self.slot.shape:
            old[0].copy_(self.groups)
            old[1].copy_(self.slot)
            self.groups, self.slot = old

    def keep(self, index: torch.Tensor) -> None:
        """Keep only rows `index` (drop finished rows); copies the written columns only."""
        self._reallocate(index, self.capacity)
        self.set_rows(self.row_prefix.index_select(0, index))

    def grow(self, extra: int) -> None:
        """Make room for `extra` more columns (copies the written ones); rare: a decode that fed forced tokens."""
        self._reallocate(None, self.capacity + extra)

    def _reallocate(self, index: torch.Tensor | None, capacity: int) -> None:
        """New buffers of `capacity` columns for rows `index` (None = all), holding their written columns."""
        written = self.length
        for buffers in (self.keys, self.values):
            for layer, old in enumerate(buffers):
                if old is not None:
                    part = old[:, :, :written] if index is None else old[:, :, :written].index_select(0, index)
                    new = old.new_empty((part.shape[0], old.shape[1], capacity) + old.shape[3:])
                    new[:, :, :written] = part
                    buffers[layer] = new
        self.capacity = capacity

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        """Write the running forward's `[B, Hkv, T, d]` keys/values; return the row KV up to the current column."""
        if self.keys[layer_idx] is None:
            # uninitialised: a column is read only after it is written (static decoding reads the whole buffer)
            b, h, _, d = key_states.shape
            shape = (b, h, self.capacity, d)
            make = torch.zeros if self.static_column is not None else torch.empty
            self.keys[layer_idx] = make(shape, dtype=key_states.dtype, device=key_states.device)
            self.values[layer_idx] = make(shape, dtype=value_states.dtype, device=value_states.device)
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
        p, n = self.groups.shape
        g = x.view(p, n, h, m, last) if self.in_order else x[self.groups]  # [P, n, Hkv, M, *]
        return g.transpose(1, 2).reshape(p, h, n * m, last)

    def from_groups(self, y: torch.Tensor, rows: int, m: int) -> torch.Tensor:
        """Inverse of `to_groups`: `[P, Hkv, n*M, *]` -> `[B, Hkv, M, *]`."""
        p, h, _, last = y.shape
        if self.identity:
            return y.reshape(h, rows, m, last).transpose(0, 1)
        y = y.reshape(p, h, -1, m, last).transpose(1, 2).reshape(-1, h, m, last)
        return y if self.in_order else y[self.slot]


def shared_prefix_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                             kptllm_rows: Rows | None = None, **kwargs):
    """Attention over [shared prefix | own suffix], eager (the HF attention-interface signature).

    query `[B, H, T, d]`; key/value `[B, Hkv, S, d]` (the rows' own KV from `Rows.update`);
    attention_mask `[B, 1, T, S]` bool (True = attend) over the row KV; the prefix is always visible.
    Returns `[B, T, H, d]`.
    """
    b, heads, t, d = query.shape
    kv_heads = key.shape[1]
    # query heads h = kv * g + j share kv head kv (as repeat_kv): [B, Hkv, g*T, d]
    out = attend(kptllm_rows, module.layer_idx, query.reshape(b, kv_heads, heads // kv_heads * t, d) * scaling,
                 key, value, attention_mask, heads // kv_heads)
    return out.reshape(b, heads, t, d).transpose(1, 2), None


def attend(rows: Rows, layer_idx: int, q: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
           mask: torch.Tensor, groups: int) -> torch.Tensor:
    """Scaled queries `q [B, Hkv, M, d]` (M = groups x T) over [prefix of each row | the row's own KV
    `[B, Hkv, S, d]`, where `mask [B, 1, T, S]` allows] -> `[B, Hkv, M, d]`.

    One softmax over both blocks, computed in two parts that never meet: the prefix scores stay in the
    prefix-grouped layout `[P, Hkv, n*M, Lp]` (usually the big tensor), the row scores in the row layout, and
    only the per-query maxima, sums and outputs (`[.., 1]` and `[.., d]`) move between layouts. So no score
    tensor is gathered, transposed or concatenated.
    """
    prefix_keys, prefix_values = rows.prefix.keys[layer_idx], rows.prefix.values[layer_idx]  # [P, Hkv, Lp, d]
    b, m = q.shape[0], q.shape[2]
    scores_prefix = torch.matmul(rows.to_groups(q), prefix_keys.transpose(-1, -2)).float()  # [P, Hkv, n*M, Lp]
    scores_rows = (torch.matmul(q, key.transpose(-1, -2)) + rows.mask_bias(mask, groups, q.dtype)).float()
    top = torch.maximum(rows.from_groups(scores_prefix.amax(-1, keepdim=True), b, m),
                        scores_rows.amax(-1, keepdim=True))  # [B, Hkv, M, 1], the prefix always visible
    if torch.is_grad_enabled() and scores_prefix.requires_grad:
        weights_prefix = (scores_prefix - rows.to_groups(top)).exp()
        weights_rows = (scores_rows - top).exp()
    else:  # inference: in place, no second copy of the scores
        weights_prefix = scores_prefix.sub_(rows.to_groups(top)).exp_()
        weights_rows = scores_rows.sub_(top).exp_()
    total = rows.from_groups(weights_prefix.sum(-1, keepdim=True), b, m) + weights_rows.sum(-1, keepdim=True)
    out = rows.from_groups(torch.matmul(weights_prefix.to(q.dtype), prefix_values), b, m)
    return (out + torch.matmul(weights_rows.to(q.dtype), value)) / total.to(q.dtype)


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


def forward_rows(language_model, base, inputs, mask, positions, rows, last: int = 0) -> torch.Tensor:
    """Logits of `inputs [B, T, D]`: the last position's `[B, V]`, or with `last = k` the last k positions' `[B, k, V]`.

    For Llama-style models the decoder layers are called directly: the model-level wrappers cost about
    1 ms a step, which is most of a step for small models. Other models take the ordinary forward.
    """
    keep = max(last, 1)
    if base is None:
        logits = language_model(inputs_embeds=inputs, attention_mask=mask, position_ids=positions, cache=rows,
                                use_cache=False, logits_to_keep=keep, kptllm_rows=rows).logits[:, -keep:]
    else:
        logits = language_model.lm_head(base.norm(decoder_hidden(base, inputs, mask, positions, rows)[:, -keep:]))
    return logits if last else logits[:, -1]


def decoder_hidden(base, inputs, mask, positions, rows) -> torch.Tensor:
    """Hidden states `[B, T, D]` (before the final norm) of `inputs [B, T, D]` through a Llama-style decoder
    `base` (`decoder_parts`), each row attending to its prefix and its own KV in `rows` (`Rows`)."""
    hidden = inputs
    rotary = base.rotary_emb(hidden, position_ids=positions)
    lean = not torch.is_grad_enabled()
    for layer in base.layers[:base.config.num_hidden_layers]:
        if lean and _plain_llama(layer):
            hidden = _llama_layer(layer, hidden, rotary, mask, rows)
        else:
            hidden = layer(hidden, attention_mask=mask, position_ids=positions, cache=rows,
                           position_embeddings=rotary, kptllm_rows=rows)
    return hidden


def _plain_llama(layer) -> bool:
    """A transformers Llama decoder layer with SiLU MLP and RMS norms (Vicuna / LocLLM and the tiny models)."""
    return (type(layer) is LlamaDecoderLayer and type(layer.self_attn) is LlamaAttention
            and type(layer.mlp) is LlamaMLP and layer.mlp.config.hidden_act == "silu"
            and type(layer.input_layernorm) is LlamaRMSNorm and type(layer.post_attention_layernorm) is LlamaRMSNorm)


def _rms_norm(norm: LlamaRMSNorm, x: torch.Tensor) -> torch.Tensor:
    # torch's fused kernel is LlamaRMSNorm bit for bit in float32; other dtypes keep transformers' rounding
    if x.dtype == torch.float32 and norm.weight.dtype == torch.float32:
        return torch.nn.functional.rms_norm(x, norm.weight.shape, norm.weight, norm.variance_epsilon)
    return norm(x)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """transformers' `x * cos + rotate_half(x) * sin` in three passes instead of five."""
    half = x.shape[-1] // 2
    out = x * cos
    out[..., :half].addcmul_(x[..., half:], sin[..., :half], value=-1)
    out[..., half:].addcmul_(x[..., :half], sin[..., half:])
    return out


def _llama_layer(layer, hidden: torch.Tensor, rotary, mask: torch.Tensor, rows: Rows) -> torch.Tensor:
    """`LlamaDecoderLayer.forward` over the rows at inference: the same arithmetic in the `[B, T, heads, d]`
    layout the projections produce (no transposes for one-token steps), norms fused, in-place where
    autograd is off. Decoding spends most of a small model's step in these element-wise passes."""
    attn, mlp = layer.self_attn, layer.mlp
    b, t, _ = hidden.shape
    d = attn.head_dim
    x = _rms_norm(layer.input_layernorm, hidden)
    cos, sin = rotary[0][:, :, None], rotary[1][:, :, None]  # [B, T, 1, d]
    q = _rotate(attn.q_proj(x).view(b, t, -1, d), cos, sin)  # [B, T, H, d]
    k = _rotate(attn.k_proj(x).view(b, t, -1, d), cos, sin)  # [B, T, Hkv, d]
    v = attn.v_proj(x).view(b, t, -1, d)
    heads, kv_heads = q.shape[2], k.shape[2]
    keys, values = rows.update(k.transpose(1, 2), v.transpose(1, 2), attn.layer_idx)
    q = (q * attn.scaling).transpose(1, 2).reshape(b, kv_heads, heads // kv_heads * t, d)
    out = attend(rows, attn.layer_idx, q, keys, values, mask, heads // kv_heads)  # [B, Hkv, g*T, d]
    hidden = attn.o_proj(out.reshape(b, heads, t, d).transpose(1, 2).reshape(b, t, heads * d)).add_(hidden)
    x = _rms_norm(layer.post_attention_layernorm, hidden)
    return mlp.down_proj(torch.nn.functional.silu(mlp.gate_proj(x), inplace=True).mul_(mlp.up_proj(x))).add_(hidden)
