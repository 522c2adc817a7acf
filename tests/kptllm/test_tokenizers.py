"""The protocol through a SentencePiece/Llama-style tokenizer (built offline): metaspace word boundaries,
one token per digit, BOS added by the processor, no pad token (pad = unk), as Llama/Vicuna ship it."""

import copy

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from kptllm.protocols import catalog
from kptllm.predictor import DEFAULT_MAX_NEW_TOKENS
from kptllm.processor import KptLLMProcessor
from kptllm.protocols.protocol import (ASSISTANT, MAX_TEXT_CHARS, SPECIAL_TOKENS, SYSTEM, ParsedAnswer, Task, build_conversation,
                             parse_answer)

# 200 characters of keypoint description (the longest a prompt accepts).
LONG = ("The outer corner of the left eye of the animal, where the upper and lower eyelids meet, seen from the "
        "front; on a dog or a cat it sits just below the base of the ear and above the cheek, by the temple")


@pytest.fixture(scope="module")
def llama_like():
    """A Unigram model with Metaspace pre-tokenisation ("▁" for spaces, prefix space on the first word)."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
        pre_tokenizers.Digits(individual_digits=True)])
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    coco = catalog.get("coco")
    corpus = [SYSTEM, ASSISTANT, LONG, *coco.names, *coco.descriptions, "[0.412, 0.305] [1.000, 0.000] 0123456789"]
    for task in Task:
        conversation = build_conversation(task, text="left eye", semantics="left eye", xy=(0.5, 0.25))
        corpus += [conversation.prefix, conversation.query, conversation.answer]
    trainer = trainers.UnigramTrainer(vocab_size=400, show_progress=False, unk_token="<unk>",
                                      special_tokens=["<unk>", "<s>", "</s>"])
    tokenizer.train_from_iterator(corpus * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    assert fast.pad_token is None  # like Llama: the processor falls back to unk
    return fast


@pytest.fixture(scope="module")
def processor(tiny, llama_like):
    config = copy.deepcopy(tiny[0].config)
    config.image_token_id = config.kpt_token_id = None  # ids of this tokenizer, not the tiny model's
    return KptLLMProcessor(copy.deepcopy(llama_like), config)


def test_tokenizer_is_llama_like(processor):
    tok = processor.tokenizer
    pieces = tok.convert_ids_to_tokens(tok(" left eye [0.412, 0.305]", add_special_tokens=False)["input_ids"])
    assert any(p.startswith("▁") for p in pieces) and not any("Ġ" in p for p in pieces)
    assert [p for p in pieces if p.strip("▁").isdigit()] == list("0412") + list("0305")  # one token per digit
    assert all(tok.convert_tokens_to_ids(t) != tok.unk_token_id for t in SPECIAL_TOKENS)
    assert processor.pad_token_id == tok.unk_token_id


@pytest.mark.parametrize("task", list(Task))
@pytest.mark.parametrize("semantics, xy", [("left eye", (0.412, 0.305)), ("right ankle", (0.0, 1.0)),
                                           ("nose", (1.0, 0.0)), (LONG, (0.5, 0.999))])
def test_answer_round_trip(processor, task, semantics, xy):
    """format -> tokenize -> decode (what the predictor does with generated ids) -> parse gives the answer back."""
    conversation = build_conversation(task, text=semantics, semantics=semantics, xy=xy)
    encoded = processor.encode_conversation(conversation)
    assert encoded.answer_ids[-1] == processor.eos_token_id
    assert processor.tokenizer.unk_token_id not in encoded.answer_ids + encoded.query_ids
    parsed = parse_answer(processor.decode(encoded.answer_ids[:-1]), task)
    assert parsed == ParsedAnswer(semantics, xy if task.has_coordinates else None)
    prefix = processor.encode_prefix()
    assert prefix[0] == processor.tokenizer.bos_token_id
    assert prefix.count(processor.image_token_id) == processor.num_image_tokens
    assert encoded.query_ids.count(processor.kpt_token_id) == (1 if task.has_kpt_prompt else 0)


def test_token_budget_with_200_character_descriptions(processor, tiny):
    """A 200-character description as the prompt fits the context with the visual tokens; every answer the
    models are trained to give (a catalog keypoint name + coordinates + EOS) fits max_new_tokens."""
    assert len(LONG) == MAX_TEXT_CHARS
    longest_name = max((n for d in catalog.datasets() for n in catalog.get(d).names), key=len)
    context = tiny[0].config.text_config.max_position_embeddings
    for task in Task:
        encoded = processor.encode_conversation(build_conversation(task, text=LONG, semantics=longest_name,
                                                                   xy=(0.123, 0.987)))
        assert len(encoded.answer_ids) <= DEFAULT_MAX_NEW_TOKENS
        assert len(encoded.prefix_ids) + len(encoded.query_ids) + DEFAULT_MAX_NEW_TOKENS <= context
        if task.has_text_prompt:
            assert processor.decode(encoded.query_ids).count("temple") == 1  # the whole description is in the prompt
