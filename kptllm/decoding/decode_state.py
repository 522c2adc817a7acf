"""What both decoders share beyond the shared-prefix attention (`modeling.shared_prefix`): the generated
answer, the suffix block, token choice under the grammar, and the collected answer."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Generated:
    """Per sequence: generated token ids (EOS excluded), each token's probability, and whether EOS was reached.

    Probabilities are the model's (softmax over the full vocabulary), also where a grammar masked the
    choice: a forced token keeps the low probability the model gave it.
    """

    token_ids: list[list[int]]
    token_probs: list[list[float]]
    finished: list[bool]


def left_padded(suffix_embeds: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The suffixes `[L_b, D]` as one block `[B, W, D]`, each right-aligned (last token at W - 1, zeros
    before it), and their lengths `[B]`."""
    sizes = [s.shape[0] for s in suffix_embeds]
    width, first = max(sizes), suffix_embeds[0]
    block = first.new_zeros(len(sizes), width, first.shape[-1])
    for row, suffix in enumerate(suffix_embeds):
        block[row, width - suffix.shape[0]:] = suffix
    return block, torch.tensor(sizes, device=first.device)


def choose_tokens(logits: torch.Tensor, grammar, modes, remaining: int):
    """Greedy tokens `[B]` from last-position logits `[B, V]` (masked to the grammar when one is given),
    their probabilities (softmax over the full vocabulary) and the rows' next grammar modes."""
    probs = logits.float().softmax(-1)
    if grammar is None:
        tokens = probs.argmax(-1)
        return tokens, probs.gather(1, tokens[:, None])[:, 0], modes
    allowed = grammar.allowed_tokens(modes, remaining)
    tokens = probs.masked_fill(~allowed, -1.0).argmax(-1)
    return tokens, probs.gather(1, tokens[:, None])[:, 0], grammar.next_mode[modes, tokens]


def collect(out_tokens: torch.Tensor, out_probs: torch.Tensor, steps: int, eos_token_id: int) -> Generated:
    """`[B, max_new]` tokens (-1 = not generated) and probabilities -> `Generated`, each row cut at its first EOS."""
    out_tokens, out_probs = out_tokens[:, :steps].tolist(), out_probs[:, :steps].tolist()
    token_ids, token_probs = [], []
    for ids, probs in zip(out_tokens, out_probs):
        end = ids.index(eos_token_id) if eos_token_id in ids else (ids.index(-1) if -1 in ids else len(ids))
        token_ids.append(ids[:end])
        token_probs.append(probs[:end])
    return Generated(token_ids, token_probs, [bool(eos_token_id in ids) for ids in out_tokens])
