"""Greedy decoding of many keypoint queries that share one image prefix.

The prefix (system text + the N visual tokens) is run once and its KV cache reused: every query's
suffix is left-padded *inside the suffix block* so all rows end at the same column, padded positions
are masked out, and position ids count only real tokens, so each row computes exactly what it would
compute alone. `generate_reference` is the slow path (one sequence, no cache) that tests hold the fast
path to.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from transformers import DynamicCache


@dataclass
class Generated:
    """Per sequence: generated token ids (EOS excluded), each token's probability, and whether EOS was reached."""

    token_ids: list[list[int]]
    token_probs: list[list[float]]
    finished: list[bool]


@torch.no_grad()
def prefill(language_model, prefix_embeds: torch.Tensor) -> DynamicCache:
    """Run the shared prefix `[1, Lp, D]` once and return its KV cache."""
    cache = DynamicCache(config=language_model.config)
    language_model(inputs_embeds=prefix_embeds, cache=cache, use_cache=True, logits_to_keep=1)
    return cache


@torch.no_grad()
def generate_with_prefix(language_model, prefix_cache: DynamicCache, prefix_len: int, suffix_embeds: list[torch.Tensor],
                         eos_token_id: int, max_new_tokens: int) -> Generated:
    """Greedy-decode K sequences `prefix + suffix_embeds[k]` as one batch.

    Args:
        prefix_cache: from `prefill`, batch 1; it is copied, not modified.
        suffix_embeds: K tensors `[L_k, D]` (the per-keypoint query embeddings).
    """
    num = len(suffix_embeds)
    if num == 0:
        return Generated([], [], [])
    width = max(s.shape[0] for s in suffix_embeds)
    dim = suffix_embeds[0].shape[-1]
    device, dtype = suffix_embeds[0].device, suffix_embeds[0].dtype
    block = torch.zeros(num, width, dim, device=device, dtype=dtype)
    mask = torch.zeros(num, width, device=device, dtype=torch.long)
    for row, suffix in enumerate(suffix_embeds):
        block[row, width - suffix.shape[0]:] = suffix
        mask[row, width - suffix.shape[0]:] = 1
    positions = (prefix_len + mask.cumsum(1) - 1).clamp(min=prefix_len)
    attention = torch.cat([torch.ones(num, prefix_len, device=device, dtype=torch.long), mask], dim=1)

    cache = copy.deepcopy(prefix_cache)
    cache.batch_repeat_interleave(num)
    logits = language_model(inputs_embeds=block, attention_mask=attention, position_ids=positions,
                            cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
    next_position = prefix_len + mask.sum(1)
    embed = language_model.get_input_embeddings()

    token_ids: list[list[int]] = [[] for _ in range(num)]
    token_probs: list[list[float]] = [[] for _ in range(num)]
    finished = torch.zeros(num, dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        probs = logits.float().softmax(-1)
        tokens = probs.argmax(-1)
        chosen = probs.gather(1, tokens[:, None])[:, 0]
        for row in (~finished).nonzero(as_tuple=True)[0].tolist():
            if int(tokens[row]) != eos_token_id:
                token_ids[row].append(int(tokens[row]))
                token_probs[row].append(float(chosen[row]))
        finished |= tokens == eos_token_id
        if bool(finished.all()) or step == max_new_tokens - 1:
            break
        attention = torch.cat([attention, torch.ones(num, 1, device=device, dtype=torch.long)], dim=1)
        logits = language_model(inputs_embeds=embed(tokens)[:, None].to(dtype), attention_mask=attention,
                                position_ids=next_position[:, None], cache=cache, use_cache=True).logits[:, -1]
        next_position = next_position + 1
    return Generated(token_ids, token_probs, finished.tolist())


@torch.no_grad()
def generate_reference(language_model, embeds: torch.Tensor, eos_token_id: int, max_new_tokens: int) -> Generated:
    """Slow path: one sequence `[L, D]`, full recomputation at every step, no cache, no padding."""
    embed = language_model.get_input_embeddings()
    sequence = embeds[None]
    ids: list[int] = []
    probs_out: list[float] = []
    finished = False
    for _ in range(max_new_tokens):
        logits = language_model(inputs_embeds=sequence, use_cache=False).logits[0, -1]
        probs = logits.float().softmax(-1)
        token = int(probs.argmax())
        if token == eos_token_id:
            finished = True
            break
        ids.append(token)
        probs_out.append(float(probs[token]))
        sequence = torch.cat([sequence, embed(torch.tensor([[token]], device=embeds.device)).to(embeds.dtype)], dim=1)
    return Generated([ids], [probs_out], [finished])
