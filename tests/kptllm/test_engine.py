"""The decoding engine (shared prefix KV, mixed images, dropped finished rows) and the answer grammar.

Token equality is against `generate_reference` (one sequence, no cache, full recomputation), in fp32.
"""

import random

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from kptllm import KeypointPredictor
from kptllm.build import build_tiny
from kptllm.decoding.constraints import AnswerGrammar, grammar_for
from kptllm.decoding.generation import decode, generate_reference, prefill_prefixes
from kptllm.protocols.protocol import Task, build_conversation, format_answer, parse_answer

NAMES = ["nose", "left shoulder", "a long description of the tail", "eye", "right knee", "the upper lip",
         "left ankle", "tip of the left wing", "hip"]


def _inputs(model, processor, images: int, names, seed=0):
    """Prefix embeds `[P, Lp, D]` of `images` random images and the query suffixes of `names` (text task)."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(images, 3, model.config.image_size, model.config.image_size, generator=generator)
    ids = torch.tensor([processor.encode_prefix()] * images)
    prefix = model.embed_inputs(ids, image_tokens=model.project_image(model.encode_images(pixels)))
    suffixes = []
    for name in names:
        query = torch.tensor([processor.encode_conversation(build_conversation(Task.TEXT, text=name)).query_ids])
        suffixes.append(model.embed_inputs(query)[0])
    return prefix, suffixes


def _eos_biased(model, processor, prefix, rows, row_prefix):
    """Make EOS win wherever a chosen mid-answer token would: one that first appears at different positions
    in different rows (picked from an unbiased decode of the same rows), so rows finish at different lengths."""
    lm = model.language_model
    with torch.no_grad():
        out = decode(lm, prefill_prefixes(lm, prefix), rows, processor.eos_token_id, 14, row_prefix=row_prefix)
    first = {}  # token -> {row: position of its first appearance after the first two tokens}
    for row, ids in enumerate(out.token_ids):
        for position, token in enumerate(ids[2:], start=2):
            first.setdefault(token, {}).setdefault(row, position)
    chosen = max(first, key=lambda t: (len(set(first[t].values())) >= 2, len(first[t])))
    assert len(set(first[chosen].values())) >= 2, "no token appears at different positions: pick another seed"
    weight = lm.get_output_embeddings().weight
    weight.data[processor.eos_token_id] = weight.data[chosen] * 1.001
    return model


def _check(model, processor, prefix, suffixes, row_prefix, max_new_tokens, grammar=None, modes=None, static=False,
           probs_rtol=None):
    lm, eos = model.language_model, processor.eos_token_id
    with torch.no_grad():
        prefixes = prefill_prefixes(lm, prefix)
        before = [k.clone() for k in prefixes.keys]
        fast = decode(lm, prefixes, suffixes, eos, max_new_tokens, row_prefix=row_prefix, grammar=grammar,
                      start_modes=modes, static=static)
        assert all(torch.equal(a, b) for a, b in zip(before, prefixes.keys))  # the shared prefix is only read
        for row, (suffix, p) in enumerate(zip(suffixes, row_prefix)):
            slow = generate_reference(lm, torch.cat([prefix[p], suffix]), eos, max_new_tokens, grammar=grammar,
                                      start_mode=0 if modes is None else modes[row])
            assert fast.token_ids[row] == slow.token_ids[0], row
            assert fast.finished[row] == slow.finished[0], row
            assert torch.allclose(torch.tensor(fast.token_probs[row]), torch.tensor(slow.token_probs[0]), atol=1e-4)
            # a random model's probabilities are small: atol alone would hide a wrong context
            if probs_rtol is not None:
                assert torch.allclose(torch.tensor(fast.token_probs[row]), torch.tensor(slow.token_probs[0]),
                                      rtol=probs_rtol, atol=0), row
    return fast


STATIC = pytest.mark.parametrize("static", [False, True], ids=["eager", "static"])


@STATIC
@pytest.mark.parametrize("seed,images,keypoints", [(0, 1, 1), (1, 1, 17), (2, 3, 5)])
def test_engine_matches_reference(seed, images, keypoints, static):
    model, processor = build_tiny(seed=seed)
    model.eval()
    names = (NAMES * 2)[:keypoints]
    prefix, suffixes = _inputs(model, processor, images, names, seed)
    rows = suffixes * images
    row_prefix = [p for p in range(images) for _ in names]
    _check(model, processor, prefix, rows, row_prefix, 12, static=static)


def _rows_finish_at_different_lengths(static: bool):
    """A mixed batch whose rows end at different steps, decoded -> the reference tokens."""
    model, processor = build_tiny(seed=3)
    model.eval()
    prefix, suffixes = _inputs(model, processor, 3, NAMES, seed=3)
    # unequal groups: 9 rows on image 0, 4 on image 2, 6 on image 1, interleaved
    rows = suffixes + suffixes[:4] + suffixes[3:]
    row_prefix = [0] * 9 + [2] * 4 + [1] * 6
    order = random.Random(0).sample(range(len(rows)), len(rows))
    rows, row_prefix = [rows[i] for i in order], [row_prefix[i] for i in order]
    _eos_biased(model, processor, prefix, rows, row_prefix)
    fast = _check(model, processor, prefix, rows, row_prefix, 14, static=static)
    lengths = {len(ids) for ids, done in zip(fast.token_ids, fast.finished) if done}
    assert sum(fast.finished) >= 3 and len(lengths) >= 2, (fast.finished, lengths)


@pytest.mark.parametrize("static,compact", [(False, 0.0), (False, 0.25), (False, 1.0), (True, None)],
                         ids=["eager-compact-at-once", "eager-compact-at-a-quarter", "eager-never-compact", "static"])
def test_engine_rows_finish_at_different_lengths_in_a_mixed_batch(static, compact, monkeypatch):
    """Rows ending at different steps: dropped at once, once a quarter has ended, or kept computing to the
    end (their tokens past EOS are cut) -> the reference tokens every way."""
    from kptllm.decoding import generation

    if compact is not None:
        monkeypatch.setattr(generation, "COMPACT_FRACTION", compact)
    _rows_finish_at_different_lengths(static)


@STATIC
@pytest.mark.parametrize("seed", [0, 4])
def test_engine_with_grammar_matches_reference(seed, static):
    model, processor = build_tiny(seed=seed)
    model.eval()
    prefix, suffixes = _inputs(model, processor, 2, NAMES[:5], seed)
    grammar = grammar_for(processor, model.language_model.config.vocab_size)
    modes = [AnswerGrammar.start_mode(k % 2 == 0) for k in range(10)]
    fast = _check(model, processor, prefix, suffixes * 2, [0] * 5 + [1] * 5, 24, grammar, modes, static=static)
    for k, ids in enumerate(fast.token_ids):
        task = Task.TEXT if k % 2 == 0 else Task.SEMANTIC
        assert parse_answer(processor.decode(ids), task).__class__.__name__ == "ParsedAnswer"


def _record_followers(monkeypatch) -> list[int]:
    """Wrap the eager decoder's choice of forced followers; returns the list of followers fed per step."""
    from kptllm.decoding import generation

    fed, choose = [], generation._forced_followers

    def recorded(*args):
        follow = choose(*args)
        fed.append(len(follow))
        return follow

    monkeypatch.setattr(generation, "_forced_followers", recorded)
    return fed


@pytest.mark.parametrize("share", [0.0, 0.5])
@pytest.mark.parametrize("neutral_bias", [False, True], ids=["followers-chosen", "followers-refused"])
def test_fed_followers_give_the_reference_tokens(share, neutral_bias, monkeypatch):
    """Forced tokens ("." after a coordinate's first digit, ", ", "]") are fed in the step of the token
    before them and checked there. Every row still gets the reference tokens: also when the model prefers
    a neutral `<pad>` where the grammar expects the follower (its LM-head row made the mean of the
    followers' rows), so fed followers must be discarded and the row goes on from its own choice."""
    from kptllm.decoding import generation

    monkeypatch.setattr(generation, "MERGE_SHARE", share)
    model, processor = build_tiny(seed=5)
    model.eval()
    lm = model.language_model
    grammar = grammar_for(processor, lm.config.vocab_size)
    pad = processor.tokenizer.pad_token_id
    if neutral_bias:
        weight = lm.get_output_embeddings().weight
        followers = [t for t in grammar.follow.unique().tolist() if t >= 0]
        weight.data[pad] = weight.data[followers].mean(0)
    prefix, suffixes = _inputs(model, processor, 2, NAMES[:6], seed=5)
    fed = _record_followers(monkeypatch)
    fast = _check(model, processor, prefix, suffixes * 2, [0] * 6 + [1] * 6, 40, grammar,
                  [AnswerGrammar.start_mode(True)] * 12, probs_rtol=1e-4)
    assert max(fed) >= 2  # ", " fed as two followers in one step
    taken = refused = 0  # where the grammar had a follower: did the answer take it?
    for ids in fast.token_ids:
        mode = AnswerGrammar.start_mode(True)
        for token in ids:
            follower = int(grammar.follow[mode])
            taken += follower == token
            refused += follower >= 0 and follower != token
            mode = int(grammar.next_mode[mode, token])
    assert taken >= 12, taken
    if neutral_bias:
        assert refused >= 3, refused


@STATIC
def test_uninitialised_row_buffers_never_reach_an_answer(static, monkeypatch):
    """The eager decoder's row KV is allocated uninitialised (and re-allocated so on compaction): filled with
    NaN instead, every answer is still the reference's, so no column is read before it is written."""
    from kptllm.decoding import generation

    empty, new_empty = torch.empty, torch.Tensor.new_empty

    def poisoned(tensor):
        return tensor.fill_(float("nan")) if tensor.is_floating_point() else tensor

    monkeypatch.setattr(torch, "empty", lambda *a, **k: poisoned(empty(*a, **k)))
    monkeypatch.setattr(torch.Tensor, "new_empty", lambda self, *a, **k: poisoned(new_empty(self, *a, **k)))
    monkeypatch.setattr(generation, "COMPACT_FRACTION", 0.0)
    _rows_finish_at_different_lengths(static)


@pytest.mark.parametrize("steps", [1, 3])
def test_the_lean_llama_layer_is_the_transformers_layer(steps, monkeypatch):
    """Decoding calls its own Llama layer body (fused norms, no transposes, in place): on three images with
    grouped-query attention (4 heads, 2 KV heads), a suffix block and then one-token steps, its hidden states
    and row KV equal those of transformers' `LlamaDecoderLayer` through the attention hook."""
    from kptllm.decoding.decode_state import left_padded
    from kptllm.modeling import shared_prefix
    from kptllm.modeling.shared_prefix import Rows, decoder_hidden

    model, processor = build_tiny(seed=7)
    model.eval()
    lm = model.language_model
    base = lm.model
    assert all(shared_prefix._plain_llama(layer) for layer in base.layers)
    assert base.config.num_key_value_heads < base.config.num_attention_heads
    prefix, suffixes = _inputs(model, processor, 3, NAMES[:4], seed=7)
    suffixes = suffixes * 3
    row_prefix = torch.tensor([p for p in range(3) for _ in range(4)])
    prefixes = prefill_prefixes(lm, prefix)
    block, lengths = left_padded(suffixes)
    width = block.shape[1]
    valid = torch.arange(width)[None] >= (width - lengths)[:, None]
    positions = (prefixes.length + valid.long().cumsum(1) - 1).clamp(min=prefixes.length)
    generator = torch.Generator().manual_seed(7)
    outputs = {}
    for lean in (True, False):
        if not lean:
            monkeypatch.setattr(shared_prefix, "_plain_llama", lambda layer: False)
        rows = Rows(prefixes, row_prefix, width + steps)
        mask = valid[:, None, None, :] & torch.ones(width, width, dtype=torch.bool).tril()[None, None]
        inputs, pos, seen = block, positions, []
        with torch.no_grad(), shared_prefix.use_attention(lm, shared_prefix.ATTENTION_NAME):
            for step in range(steps):
                hidden = decoder_hidden(base, inputs, mask, pos, rows)
                rows.length += inputs.shape[1]
                seen.append(hidden)
                inputs = torch.randn(len(suffixes), 1, block.shape[-1], generator=generator.manual_seed(step))
                pos = pos[:, -1:] + 1
                mask = torch.ones(len(suffixes), 1, 1, rows.length + 1, dtype=torch.bool)
                mask[:, :, :, :width] = valid[:, None, None, :]
        outputs[lean] = seen, [k[:, :, :rows.length] for k in rows.keys], [v[:, :, :rows.length] for v in rows.values]
    for mine, theirs in zip(outputs[True], outputs[False]):
        for a, b in zip(mine, theirs):
            assert a.shape == b.shape
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), (a - b).abs().max()


def test_static_buffers_reused_across_calls_hold_nothing_of_the_last_call():
    """A second call of the same shape reuses the first call's buffers (the CUDA-graph path depends on it):
    other images, the names in another order, rows mapped to other prefixes -> still the reference tokens."""
    from kptllm.decoding import static_decode

    model, processor = build_tiny(seed=5)
    model.eval()
    prefix_a, suffixes_a = _inputs(model, processor, 2, NAMES[:4], seed=5)
    prefix_b, suffixes_b = _inputs(model, processor, 2, NAMES[3::-1], seed=6)
    _check(model, processor, prefix_a, suffixes_a * 2, [0] * 4 + [1] * 4, 12, static=True)
    states = static_decode._states[model.language_model]
    assert len(states) == 1
    (buffers_before,) = [id(s.rows.keys[0]) for s in states.values()]
    _check(model, processor, prefix_b, suffixes_b * 2, [1] * 4 + [0] * 4, 12, static=True)
    assert len(states) == 1 and id(next(iter(states.values())).rows.keys[0]) == buffers_before


def test_static_state_cache_is_bounded_by_bytes(monkeypatch):
    """Each kept shape holds its buffers: the estimate equals what is allocated, and older states go first
    when the kept ones would exceed KPTLLM_STATIC_CACHE_GB."""
    from kptllm.decoding import static_decode

    model, processor = build_tiny(seed=8)
    model.eval()
    lm = model.language_model
    prefix, suffixes = _inputs(model, processor, 1, NAMES[:4], seed=8)
    _check(model, processor, prefix, suffixes, [0] * 4, 12, static=True)
    (state,) = static_decode._states[lm].values()
    allocated = sum(t.nbytes for t in state.rows.keys + state.rows.values + state.prefix.keys + state.prefix.values)
    assert state.nbytes == allocated
    _check(model, processor, prefix, suffixes[:3], [0] * 3, 12, static=True)  # 3 rows pad to the same 8
    assert len(static_decode._states[lm]) == 1
    _check(model, processor, prefix, suffixes, [0] * 4, 40, static=True)  # a longer answer: a second shape
    assert len(static_decode._states[lm]) == 2
    monkeypatch.setattr(static_decode, "CACHE_BYTES", state.nbytes)  # room for about one state
    _check(model, processor, prefix, suffixes, [0] * 4, 70, static=True)  # a third: the older two go
    kept = list(static_decode._states[lm].values())
    assert len(kept) == 1 and kept[0].rows.capacity > state.rows.capacity


def test_static_suffix_prefill_computes_the_real_rows_only(monkeypatch):
    """The dense layout pads 5 + 2 rows to 8 per prefix: the suffix block is still prefilled for 7 rows, and
    the padding slots' copies of their KV leave every answer equal to the reference."""
    from kptllm.decoding import static_decode

    model, processor = build_tiny(seed=5)
    model.eval()
    prefix, suffixes = _inputs(model, processor, 2, NAMES[:7], seed=5)
    widths = []
    forward = static_decode.forward_rows
    monkeypatch.setattr(static_decode, "forward_rows", lambda lm, base, inputs, *rest: (
        widths.append(tuple(inputs.shape[:2])), forward(lm, base, inputs, *rest))[1])
    _check(model, processor, prefix, suffixes, [0, 1, 0, 0, 1, 0, 0], 12, static=True)
    width = max(s.shape[0] for s in suffixes)
    assert widths[0] == (7, width)  # the block: real rows only (the dense grid has 2 x 8 = 16 slots)
    assert all(w == (16, 1) for w in widths[1:])  # the steps: the whole grid, one token


def test_dense_row_layout_pads_every_prefix_to_the_same_rows():
    from kptllm.decoding.static_decode import _dense_rows

    source, slot, width = _dense_rows([2, 0, 2, 2], count=3, step=4)
    assert width == 4 and len(source) == 12
    assert [source[s] for s in slot] == [0, 1, 2, 3]  # every original row has its own slot
    assert source[0:4] == [1, 1, 1, 1] and source[4:8] == [0, 0, 0, 0]  # prefix 1 has no rows: borrows row 0
    assert source[8:12] == [0, 2, 3, 0]


# ----------------------------------------------------------------------------- predictor level
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_constrained_random_models_always_parse(seed, coco_person):
    model, processor = build_tiny(seed=seed)
    predictor = KeypointPredictor(model, processor, max_new_tokens=24)
    predictor.set_image(coco_person.image, coco_person.bbox)
    results = predictor.detect(NAMES)
    assert all(r.parsed and r.xy is not None for r in results), [r.raw for r in results]
    assert all(0 <= v <= 1 for r in results for v in r.xy_normalized)
    semantic = predictor.describe([(300.0, 100.0), (350.0, 200.0)])
    assert all(r.parsed for r in semantic)
    predictor.constrained = False  # off by a flag
    free = predictor.detect(NAMES)
    assert not all(r.parsed for r in free)  # random models rarely follow the protocol by themselves


def test_constrained_equals_unconstrained_when_that_parsed(trained, coco_person):
    predictor, visible = trained
    predictor.set_image(coco_person.image, coco_person.bbox)
    names = [name for name, _ in visible] + ["right ear", "left knee"]
    predictor.constrained = False
    free = predictor.detect(names)
    predictor.constrained = True
    constrained = predictor.detect(names)
    assert sum(r.parsed for r in free) >= len(visible)
    for a, b in zip(free, constrained):
        assert b.parsed
        if a.parsed:
            assert a.raw == b.raw


# ----------------------------------------------------------------------------- grammar, any tokenizer
class _Processor:
    """What `grammar_for` needs of a processor: a tokenizer, decode and EOS."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.eos_token_id = tokenizer.eos_token_id

    def decode(self, ids):
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def _merged_digit_tokenizer():
    """Byte-level BPE without digit splitting: merges like '0.4', '12', ', 0.' and ' [0.' appear."""
    rng = random.Random(0)
    corpus = [format_answer(rng.choice(NAMES), (rng.random(), rng.random())) for _ in range(400)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, show_progress=False, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


@pytest.fixture(scope="module", params=["tiny", "merged"])
def grammar_case(request, tiny):
    processor = tiny[1] if request.param == "tiny" else _Processor(_merged_digit_tokenizer())
    return processor, grammar_for(processor)


def test_merged_tokenizer_has_multi_digit_tokens():
    vocab = _merged_digit_tokenizer().get_vocab()
    assert any(sum(c.isdigit() for c in token) >= 2 for token in vocab)


def test_every_valid_answer_is_allowed(grammar_case):
    processor, grammar = grammar_case
    rng = random.Random(1)
    values = [0.0, 1.0, 0.999, 0.0005] + [rng.random() for _ in range(40)]
    for i, x in enumerate(values):
        answer = " " + format_answer(rng.choice(NAMES), (x, values[-i]))
        ids = processor.tokenizer(answer, add_special_tokens=False)["input_ids"] + [processor.eos_token_id]
        assert processor.decode(ids[:-1]) == answer
        mode = torch.tensor([AnswerGrammar.start_mode(True)])
        for step, token in enumerate(ids):
            assert grammar.allowed_tokens(mode, len(ids) - step)[0, token], (answer, step)
            mode = grammar.next_mode[mode, torch.tensor([token])]
        assert int(mode) >= 0


@pytest.mark.parametrize("task", [Task.TEXT, Task.SEMANTIC])
def test_random_walks_under_the_grammar_parse(grammar_case, task):
    """Any path the grammar allows parses, even a random one, and finishes within the budget."""
    processor, grammar = grammar_case
    rng = random.Random(2)
    start = AnswerGrammar.start_mode(task.has_coordinates)
    assert int(grammar.need[start]) <= 16
    for trial in range(60):
        budget = int(grammar.need[start]) + rng.choice([0, 1, 3, 10, 30])
        mode, ids = torch.tensor([start]), []
        for step in range(budget):
            allowed = grammar.allowed_tokens(mode, budget - step)[0].nonzero()[:, 0].tolist()
            token = rng.choice(allowed)
            if token == processor.eos_token_id:
                break
            ids.append(token)
            mode = grammar.next_mode[mode, torch.tensor([token])]
        parsed = parse_answer(processor.decode(ids), task)
        assert parsed.__class__.__name__ == "ParsedAnswer", (trial, processor.decode(ids), parsed)


def _walk(processor, grammar, pieces: list[str], task: Task = Task.TEXT, budget: int = 64):
    """Feed `pieces` (each tokenised on its own) through the grammar; returns (ids, index of the first refused token or None)."""
    mode = torch.tensor([AnswerGrammar.start_mode(task.has_coordinates)])
    ids = [t for piece in pieces for t in processor.tokenizer(piece, add_special_tokens=False)["input_ids"]]
    for step, token in enumerate(ids):
        if not grammar.allowed_tokens(mode, budget - step)[0, token]:
            return ids, step
        mode = grammar.next_mode[mode, torch.tensor([token])]
    return ids, None


@pytest.mark.parametrize("task", [Task.TEXT, Task.SEMANTIC])
@pytest.mark.parametrize("pieces", [[" eye <", "kp", "t", ">"], [" eye <im", "ag", "e", ">"], [" <", "kpt", ">"]])
def test_a_placeholder_spelled_over_several_tokens_is_masked(grammar_case, task, pieces):
    """The parser refuses "<kpt>" / "<image>" in an answer, so the grammar must refuse them even when no single
    token holds them: the last piece's token is the one refused, and only that one."""
    processor, grammar = grammar_case
    ids, refused = _walk(processor, grammar, pieces, task)
    assert processor.decode(ids) == "".join(pieces)
    assert refused == len(ids) - 1
    # one character short of the placeholder, the text is fine and the answer still finishes and parses
    ids, refused = _walk(processor, grammar, pieces[:-1] + [" eye"] + ([" [0.500, 0.250]"] if task is Task.TEXT else []), task)
    assert refused is None and parse_answer(processor.decode(ids), task).__class__.__name__ == "ParsedAnswer"


@pytest.mark.parametrize("char", ["\u200b", "\u202e", "\u0085\u0090", "\ufeff"])
def test_control_and_format_characters_written_byte_by_byte_still_parse(grammar_case, char):
    """A byte-level tokenizer writes a zero-width space as three byte tokens, each of which the grammar sees as
    U+FFFD: every path it allows must parse, and the character is shown as U+FFFD, not passed on hidden."""
    processor, grammar = grammar_case
    ids, refused = _walk(processor, grammar, [" left eye", char, " [0.500, 0.250]"])
    assert refused is None
    parsed = parse_answer(processor.decode(ids), Task.TEXT)
    assert parsed.__class__.__name__ == "ParsedAnswer" and parsed.xy == (0.5, 0.25)
    assert not any(c in parsed.semantics for c in "\u200b\u202e\u0090\ufeff")


@pytest.mark.parametrize("row_prefix,in_order", [([0, 0, 1, 1, 2, 2], True), ([0, 1, 0, 1, 2, 2], False),
                                                 ([0, 0, 0, 1, 2, 2], False), ([2, 2, 1, 1, 0, 0], False)])
def test_rows_grouped_by_prefix_as_views_or_gathers(row_prefix, in_order):
    """Rows sorted by prefix, as many for each, are grouped by a view; any other order by a gather: both put
    every row beside the other rows of its prefix, and `from_groups` undoes `to_groups`."""
    from kptllm.modeling.shared_prefix import PrefixKV, Rows

    prefix = PrefixKV([torch.zeros(3, 2, 5, 4)], [torch.zeros(3, 2, 5, 4)])
    rows = Rows(prefix, torch.tensor(row_prefix), capacity=8)
    assert rows.in_order == in_order
    x = torch.arange(6.0)[:, None, None, None].expand(6, 2, 3, 4) + torch.rand(6, 2, 3, 4) * 0.1  # row b ~ b
    grouped = rows.to_groups(x)  # [P, Hkv, n*M, 4]
    for p in range(3):
        members = {int(v) for v in grouped[p, 0, :, 0].floor().tolist()}
        assert members == {b for b, q in enumerate(row_prefix) if q == p}
    assert torch.equal(rows.from_groups(grouped, 6, 3), x)
