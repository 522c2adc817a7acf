"""Greedy decoding of many keypoint queries over shared image prefixes (the decoding engine).

Every query is `prefix + suffix + answer`: the prefix (system text + the N visual tokens of one image)
is the same for all keypoints asked about that image, the suffix is the per-keypoint instruction.

    prefix KV   [P, Hkv, Lp, d] per layer        one per image, computed once (`prefill_prefixes`)
    row KV      [B, Hkv, S, d]  per layer        one per query: suffix + generated tokens only

No row ever holds a copy of its prefix: attention for row b is computed over the two blocks
[prefix p(b) | own suffix] (`shared_prefix_attention`): the rows that share a prefix are folded into
the query-length axis of one matmul against that prefix (one GEMM per image instead of B GEMVs), the
suffix part is an ordinary batched matmul, and one softmax spans both (computed in two parts). So memory
grows with the suffix length only, and a batch may mix images (the evaluation runner's batches).

Suffixes are left-padded *inside the suffix block* so all rows end at the same column; padded
positions are masked out and position ids count only real tokens, so each row computes exactly what
it would compute alone (up to float rounding). Rows that emit EOS are dropped from the batch (their
KV rows are compacted away) once they are a quarter of it (`COMPACT_FRACTION`): finished rows stop
costing work without a copy of every layer's KV each time a few rows end.

Optionally (`grammar`, see constraints.py) each row's tokens are masked to the answer grammar. Where the
grammar leaves one token (the "." of "0.", ", ", "]"), that token is fed in the same step as the token
before it (a step of 2-3 columns: 16 -> 11 steps for `left eye [0.412, 0.305]`); the model's own choice at
that place is still computed, and a fed token it would not have chosen (a neutral `<pad>`) is masked out of
the row's KV, so the tokens are exactly those of one token a step (`feed_forced`). The state
both decoders share lives in `modeling/shared_prefix.py` (prefix KV, rows, the attention hook; training uses
it too) and `decode_state.py` (token choice, the collected answer).
`generate_reference` is the slow path (one sequence, full recomputation, no cache) that the tests hold
the engine to, token for token.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from ..modeling.shared_prefix import ATTENTION_NAME, PrefixKV, Rows, decoder_parts, fill_cache, forward_rows, use_attention
from .decode_state import Generated, choose_tokens, collect, left_padded

# Finished rows leave the batch once they are this share of it; until then they keep computing (their
# tokens after EOS are cut off), which costs less than copying every layer's row KV for a few rows.
COMPACT_FRACTION = 0.25
# Tokens the grammar forces (the "." of "0.", ", ", "]") are fed in the same step as the token before them,
# up to this many, when at least this share of the rows has one; the model's own choice there is still
# computed and a follower it would not have chosen (a neutral token instead) is discarded.
MAX_FOLLOWERS = 4
MERGE_SHARE = 0.5


@torch.no_grad()
def prefill(language_model, prefix_embeds: torch.Tensor) -> DynamicCache:
    """Run the prefixes `[P, Lp, D]` (usually P = 1) once and return their KV cache."""
    return fill_cache(language_model, prefix_embeds)


@torch.no_grad()
def prefill_prefixes(language_model, prefix_embeds: torch.Tensor) -> PrefixKV:
    """`[P, Lp, D]` -> `PrefixKV` with P prefixes."""
    return PrefixKV.from_cache(prefill(language_model, prefix_embeds))


@torch.no_grad()
def decode(language_model, prefix: PrefixKV, suffix_embeds: list[torch.Tensor], eos_token_id: int,
           max_new_tokens: int, row_prefix: list[int] | None = None, grammar=None,
           start_modes: list[int] | None = None, static: bool | None = None, feed_forced: bool = True) -> Generated:
    """Greedy-decode B sequences `prefix[row_prefix[b]] + suffix_embeds[b]` as one batch.

    Args:
        prefix: P prefixes' KV (`prefill_prefixes`); read, never modified or copied per row.
        suffix_embeds: B tensors `[L_b, D]` (the per-keypoint query embeddings).
        row_prefix: which prefix each row continues (default: all 0).
        grammar: an `AnswerGrammar` (constraints.py) to mask tokens; None = free greedy decoding.
        start_modes: grammar mode of each row at the start (`AnswerGrammar.start_mode`).
        static: decode with static shapes and CUDA graphs (static_decode.py). None = as
            `static_decode.static_enabled` says (on CUDA devices for Llama-style LMs by default); True off
            a GPU runs the static step eagerly.
        feed_forced: feed the grammar's forced tokens in the step of the token before them (fewer steps, the
            same tokens; eager path only). A step's shape then depends on the other rows, so probabilities
            move at float rounding (~1e-8) with the batch's make-up: off where results must not depend on
            the batch size (the evaluation runner's records).
    """
    num = len(suffix_embeds)
    if num == 0:
        return Generated([], [], [])
    device, dtype = suffix_embeds[0].device, suffix_embeds[0].dtype
    row_prefix_t = torch.zeros(num, dtype=torch.long, device=device) if row_prefix is None else \
        torch.as_tensor(row_prefix, dtype=torch.long, device=device)
    modes = None
    if grammar is not None:
        grammar = grammar.to(device)
        modes = torch.as_tensor(start_modes if start_modes is not None else [0] * num, dtype=torch.long, device=device)
    base = decoder_parts(language_model)
    if static is None:
        from .static_decode import static_enabled
        static = base is not None and static_enabled(device)
    if static:
        if base is None:
            raise ValueError("static decoding needs a Llama-style language model (model.layers, rotary_emb, norm)")
        from .static_decode import decode_static
        return decode_static(language_model, base, prefix, suffix_embeds, eos_token_id, max_new_tokens, row_prefix_t,
                             grammar=grammar, modes=modes, use_graph=torch.device(device).type == "cuda")

    block, lengths = left_padded(suffix_embeds)
    width = block.shape[1]
    capacity = width + max_new_tokens  # enough at one token a step; fed followers may need more (`Rows.grow`)
    valid = torch.zeros(num, capacity, device=device, dtype=torch.bool)
    valid[:, :width] = torch.arange(width, device=device)[None] >= (width - lengths)[:, None]
    prefix_len = prefix.length
    positions = (prefix_len + valid[:, :width].long().cumsum(1) - 1).clamp(min=prefix_len)
    rows = Rows(prefix, row_prefix_t, capacity)
    causal = torch.ones(width, width, device=device, dtype=torch.bool).tril()
    embed = language_model.get_input_embeddings()
    # one spare column: rows that are done write their (discarded) choices there
    out_tokens = torch.full((num, max_new_tokens + 1), -1, dtype=torch.long, device=device)
    out_probs = torch.zeros(num, max_new_tokens + 1, device=device)
    spare = torch.full((num,), max_new_tokens, dtype=torch.long, device=device)
    with use_attention(language_model, ATTENTION_NAME):
        logits = forward_rows(language_model, base, block, valid[:, None, None, :width] & causal[None, None],
                              positions, rows)
        rows.length = width
        tokens, chosen, next_modes = choose_tokens(logits, grammar, modes, max_new_tokens)
        out_tokens[:, 0], out_probs[:, 0] = tokens, chosen
        modes = next_modes
        active = torch.arange(num, device=device)  # original row id of each batch row
        produced = torch.ones(num, dtype=torch.long, device=device)  # answer tokens chosen so far, per row
        next_position = prefix_len + lengths
        running = (tokens != eos_token_id) & (produced < max_new_tokens)  # rows still answering
        while True:
            done = int(running.numel() - running.sum())
            if done == running.numel():
                break
            if done and done >= COMPACT_FRACTION * running.numel():
                keep = running.nonzero(as_tuple=True)[0]
                active, tokens, next_position, valid = active[keep], tokens[keep], next_position[keep], valid[keep]
                produced, running, spare = produced[keep], running[keep], spare[keep]
                rows.keep(keep)
                if grammar is not None:
                    modes = modes[keep]
            follow = _forced_followers(grammar if feed_forced else None, modes, running, produced, max_new_tokens)
            column, span = rows.length, 1 + len(follow)
            if column + span > rows.capacity:  # columns fed to some rows were skipped by others
                extra = max(column + span - rows.capacity, MAX_FOLLOWERS * 4)
                rows.grow(extra)
                valid = torch.cat([valid, valid.new_zeros(valid.shape[0], extra)], 1)
            if not follow:  # the usual step: one token per row
                valid[:, column] = True
                logits = forward_rows(language_model, base, embed(tokens)[:, None].to(dtype),
                                      valid[:, None, None, :column + 1], next_position[:, None], rows)
                rows.length += 1
                remaining = max_new_tokens - produced if grammar is not None else max_new_tokens
                tokens, chosen, after = choose_tokens(logits, grammar, modes, remaining)
                slot = torch.where(running, produced, spare)
                out_tokens[active, slot], out_probs[active, slot] = tokens, chosen
                if grammar is not None:
                    modes = torch.where(running, after, modes)
                produced = produced + running
                next_position = next_position + 1
            else:
                tokens, modes, advance = _feed_step(language_model, base, rows, valid, column, tokens, modes, follow,
                                                    running, produced, next_position, grammar, max_new_tokens,
                                                    out_tokens, out_probs, active, spare, embed, dtype)
                produced = produced + advance
                next_position = next_position + advance
            running = running & (tokens != eos_token_id) & (produced < max_new_tokens)
    return collect(out_tokens[:, :max_new_tokens], out_probs[:, :max_new_tokens], max_new_tokens, eos_token_id)


def _feed_step(language_model, base, rows: Rows, valid, column: int, tokens, modes, follow: list, running, produced,
               next_position, grammar, max_new_tokens: int, out_tokens, out_probs, active, spare, embed, dtype):
    """One step that feeds each row's token and its forced followers (`follow`, from `_forced_followers`) as
    columns `column..column+span-1`, then chooses the token after each: a follower stands only if the model
    chose it at its place, else the row goes on from its own choice there and the columns after are masked.
    Writes the chosen tokens and probabilities; returns the rows' next tokens and modes and how many tokens
    each row advanced `[B]`."""
    span = 1 + len(follow)
    inputs = torch.stack([tokens] + [torch.where(has, token, tokens) for token, has in follow], 1)  # [B, span]
    valid[:, column] = True
    for j, (_, has) in enumerate(follow, 1):
        valid[:, column + j] = has
    offsets = torch.arange(span, device=tokens.device)
    # each fed token sees the ones before it, not those after
    seen = torch.arange(column + span, device=tokens.device)[None] <= column + offsets[:, None]
    mask = valid[:, None, None, :column + span] & seen[None, None]
    logits = forward_rows(language_model, base, embed(inputs).to(dtype), mask, next_position[:, None] + offsets, rows,
                          last=span)
    rows.length += span
    going, advance = running, torch.zeros_like(produced)
    for j in range(span):
        token, chosen, after = choose_tokens(logits[:, j], grammar, modes, max_new_tokens - produced - j)
        slot = torch.where(going, produced + j, spare)
        out_tokens[active, slot], out_probs[active, slot] = token, chosen
        if j < span - 1:
            follower, has = follow[j]
            agree = going & has & (token == follower)
            valid[:, column + j + 1] &= agree
        else:
            agree = torch.zeros_like(going)
        stop = going & ~agree
        tokens = torch.where(stop, token, tokens)
        advance = torch.where(stop, j + 1, advance)
        modes = torch.where(going, after, modes)
        going = agree
    return tokens, modes, advance


def _forced_followers(grammar, modes, running, produced, max_new_tokens: int) -> list:
    """The grammar's forced next tokens (`AnswerGrammar.follow`) to feed in this step after each row's token:
    up to `MAX_FOLLOWERS` `(token [B], has [B])` pairs, the j-th kept only when at least `MERGE_SHARE` of the
    rows have one (a feed costs every row a column) and within the answer budget."""
    follow = []
    if grammar is None:
        return follow
    has = running
    for j in range(1, MAX_FOLLOWERS + 1):
        token = grammar.follow[modes]
        has = has & (token >= 0) & (produced + j < max_new_tokens)
        if int(has.sum()) < MERGE_SHARE * has.numel():
            break
        token = token.clamp(min=0)
        follow.append((token, has))
        modes = grammar.next_mode[modes, token].clamp(min=0)
    return follow


@torch.no_grad()
def generate_with_prefix(language_model, prefix_cache, prefix_len: int, suffix_embeds: list[torch.Tensor],
                         eos_token_id: int, max_new_tokens: int, grammar=None, start_modes=None) -> Generated:
    """Greedy-decode K sequences `prefix + suffix_embeds[k]` as one batch over one shared prefix.

    Args:
        prefix_cache: from `prefill` (batch 1) or a `PrefixKV`; read, never copied or modified.
        prefix_len: its length (checked).
        suffix_embeds: K tensors `[L_k, D]` (the per-keypoint query embeddings).
    """
    if not suffix_embeds:
        return Generated([], [], [])
    prefix = prefix_cache if isinstance(prefix_cache, PrefixKV) else PrefixKV.from_cache(prefix_cache)
    if prefix.length != prefix_len:
        raise ValueError(f"the prefix cache holds {prefix.length} tokens, not {prefix_len}")
    return decode(language_model, prefix, suffix_embeds, eos_token_id, max_new_tokens, grammar=grammar,
                  start_modes=start_modes)


@torch.no_grad()
def generate_reference(language_model, embeds: torch.Tensor, eos_token_id: int, max_new_tokens: int,
                       grammar=None, start_mode: int = 0) -> Generated:
    """Slow path: one sequence `[L, D]`, full recomputation at every step, no cache, no padding."""
    embed = language_model.get_input_embeddings()
    sequence = embeds[None]
    ids: list[int] = []
    probs_out: list[float] = []
    finished = False
    mode = torch.tensor([start_mode], device=embeds.device)
    if grammar is not None:
        grammar = grammar.to(embeds.device)
    for step in range(max_new_tokens):
        logits = language_model(inputs_embeds=sequence, use_cache=False).logits[0, -1]
        probs = logits.float().softmax(-1)
        if grammar is None:
            token = int(probs.argmax())
        else:
            allowed = grammar.allowed_tokens(mode, max_new_tokens - step)[0]
            token = int(probs.masked_fill(~allowed, -1.0).argmax())
            mode = grammar.next_mode[mode, token]
        if token == eos_token_id:
            finished = True
            break
        ids.append(token)
        probs_out.append(float(probs[token]))
        sequence = torch.cat([sequence, embed(torch.tensor([[token]], device=embeds.device)).to(embeds.dtype)], dim=1)
    return Generated([ids], [probs_out], [finished])
