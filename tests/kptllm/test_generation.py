"""The batched, prefix-sharing decoder gives the same tokens as decoding each sequence alone."""

import torch

from kptllm.decoding.generation import generate_reference, generate_with_prefix, prefill
from kptllm.protocols.protocol import Task, build_conversation


def _embeds(predictor, task, texts, kpt_tokens=None):
    processor, model = predictor.processor, predictor.model
    prefix = processor.encode_prefix()
    state = predictor.image_state
    prefix_embeds = model.embed_inputs(torch.tensor([prefix]), image_tokens=model.project_image(state.features))
    suffixes = []
    for k, text in enumerate(texts):
        ids = torch.tensor([processor.encode_conversation(build_conversation(task, text=text)).query_ids])
        suffixes.append(model.embed_inputs(ids, kpt_tokens=None if kpt_tokens is None else kpt_tokens[k:k + 1])[0])
    return prefix_embeds, suffixes


def _check_fast_equals_slow(predictor, task, texts, kpt_tokens=None, max_new_tokens=24):
    model, eos = predictor.model, predictor.processor.eos_token_id
    with torch.no_grad():
        prefix, suffixes = _embeds(predictor, task, texts, kpt_tokens)
        cache = prefill(model.language_model, prefix)
        fast = generate_with_prefix(model.language_model, cache, prefix.shape[1], suffixes, eos, max_new_tokens)
        again = generate_with_prefix(model.language_model, cache, prefix.shape[1], suffixes, eos, max_new_tokens)
        assert again.token_ids == fast.token_ids  # the cached prefix is not modified by decoding
        for k, suffix in enumerate(suffixes):
            slow = generate_reference(model.language_model, torch.cat([prefix[0], suffix]), eos, max_new_tokens)
            assert fast.token_ids[k] == slow.token_ids[0], k
            assert fast.finished[k] == slow.finished[0]
            assert torch.allclose(torch.tensor(fast.token_probs[k]), torch.tensor(slow.token_probs[0]), atol=1e-4)
    return fast


def test_trained_model_fast_path_matches_slow_path(trained, coco_person):
    predictor, visible = trained
    predictor.set_image(coco_person.image, coco_person.bbox)
    # names of different token lengths, so rows are padded differently
    fast = _check_fast_equals_slow(predictor, Task.TEXT, ["nose", "left shoulder", "right eye", "the left ear tip"])
    assert all(fast.finished[:3])
    state = predictor.image_state
    points = torch.tensor([state.prepared.crop.to_crop(xy).tolist() for _, xy in visible], dtype=torch.float32)
    kpt = predictor.model.encode_prompts(state.features, points, torch.zeros(len(points), dtype=torch.long),
                                         torch.arange(len(points)), len(points))
    _check_fast_equals_slow(predictor, Task.VISUAL, [None] * len(points), kpt)


def test_random_model_fast_path_matches_slow_path(predictor, coco_person):
    predictor.set_image(coco_person.image, coco_person.bbox)
    _check_fast_equals_slow(predictor, Task.TEXT, ["nose", "left shoulder", "a long description of the tail"],
                            max_new_tokens=12)


def test_empty_request_generates_nothing(predictor, coco_person):
    predictor.set_image(coco_person.image)
    out = generate_with_prefix(predictor.model.language_model, predictor.image_state.prefix, 1, [], 0, 5)
    assert out.token_ids == [] and out.finished == []
