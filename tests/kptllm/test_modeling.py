"""The model: splicing, loss on answers only, gradients, frozen weights, save/load, backbones."""

import numpy as np
import pytest
import torch
from transformers import (AutoModel, AutoModelForCausalLM, CLIPVisionConfig, ConvNextConfig, Dinov2Config,
                          LlamaConfig)

from kptllm import KptLLMConfig, KptLLMForKeypoints, KptLLMProcessor
from kptllm.batch import KeypointSample, collate_samples
from kptllm.build import build_from_parts, build_tiny, tiny_parts, train_tiny_tokenizer
from kptllm.processor import IGNORE_INDEX
from kptllm.protocols.protocol import Task


def _samples(processor, instances):
    """One sample of every task from real images (COCO person + AP-10K animal)."""
    coco = next(i for i in instances if i.dataset == "coco" and sum(v > 0 for *_, v in i.keypoints) >= 3)
    animal = next(i for i in instances if i.dataset == "ap10k")
    q, s = processor.prepare_image(coco.image, coco.bbox), processor.prepare_image(animal.image, animal.bbox)
    visible = [(x, y) for x, y, v in coco.keypoints if v > 0]
    animal_visible = [(x, y) for x, y, v in animal.keypoints if v > 0]
    return [
        KeypointSample(Task.SEMANTIC, q, "nose", support_points=[visible[0]]),
        KeypointSample(Task.TEXT, q, "left eye", xy=visible[1], text="left eye"),
        KeypointSample(Task.VISUAL, q, "right eye", xy=visible[2], supports=[s], support_points=[animal_visible[0]]),
        KeypointSample(Task.VISUAL_TEXT, q, "right eye", xy=visible[2], text="right eye",
                       supports=[s, q], support_points=[animal_visible[1], visible[2]]),
    ]


def test_only_answer_tokens_carry_labels(tiny, instances):
    model, processor = tiny
    batch = collate_samples(processor, _samples(processor, instances))
    for row in range(batch["input_ids"].shape[0]):
        ids, labels = batch["input_ids"][row], batch["labels"][row]
        supervised = (labels != IGNORE_INDEX).nonzero()[:, 0]
        assert len(supervised) > 0
        # labels equal the inputs where supervised, and form one contiguous block ending with EOS
        assert torch.equal(labels[supervised], ids[supervised])
        assert supervised.tolist() == list(range(int(supervised[0]), int(supervised[-1]) + 1))
        assert int(ids[supervised[-1]]) == processor.eos_token_id
        assert not (labels == processor.image_token_id).any() and not (labels == processor.kpt_token_id).any()
        answer = processor.decode(ids[supervised].tolist())
        assert answer.strip().split(" [")[0] in ("nose", "left eye", "right eye")
    assert (batch["input_ids"] == processor.image_token_id).sum() == 4 * model.config.num_image_tokens
    assert (batch["input_ids"] == processor.kpt_token_id).sum() == 3
    assert batch["kpt_slot_ids"].tolist() == [0, 1, 2, 2]  # the 2-shot sample averages into one slot


def test_forward_backward_reaches_trainable_parts_and_nothing_else(instances):
    model, processor = build_tiny(seed=3)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = collate_samples(processor, _samples(processor, instances))
    out = model(**batch)
    assert torch.isfinite(out.loss) and out.loss.item() > 0
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    for prefix in ("projector.", "prompt_encoder.", "prompt_feature_extractor."):
        assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith(prefix)), prefix
    lora_llm = [n for n in grads if n.startswith("language_model.") and "lora_B" in n]
    lora_vision = [n for n in grads if n.startswith("vision_model.") and "lora_B" in n]
    assert lora_llm and lora_vision
    assert all(grads[n] is not None and grads[n].abs().sum() > 0 for n in lora_llm + lora_vision)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert any("embed_tokens" in n for n in frozen) and any("base_layer" in n for n in frozen)
    assert all(grads[n] is None for n in frozen)
    torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0).step()
    for name, param in model.named_parameters():
        changed = not torch.equal(before[name], param.detach())
        assert changed == (param.requires_grad and grads[name] is not None and bool(grads[name].abs().sum() > 0)), name


def test_loss_is_cross_entropy_on_answer_tokens_only(tiny, instances):
    model, processor = tiny
    batch = collate_samples(processor, _samples(processor, instances))
    with torch.no_grad():
        out = model(**batch)
    logits, labels = out.logits[:, :-1], batch["labels"][:, 1:]
    keep = labels != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits[keep].float(), labels[keep])
    assert torch.allclose(out.loss, expected, atol=1e-5)
    assert keep.sum() < 0.2 * keep.numel()  # the image and the question are most of each sequence


def test_placeholder_mismatch_is_a_clear_error(tiny, instances):
    model, processor = tiny
    batch = collate_samples(processor, _samples(processor, instances)[1:2])
    with pytest.raises(ValueError, match="placeholders"):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])  # no pixel_values
    batch = collate_samples(processor, _samples(processor, instances)[:1])
    with pytest.raises(ValueError, match="support"):
        model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"], kpt_points=batch["kpt_points"])


def test_kshot_slot_is_the_mean_of_its_prompts(tiny, instances):
    model, processor = tiny
    feats = torch.randn(2, model.config.num_image_tokens, model.config.vision_hidden_size)
    pts = torch.tensor([[0.2, 0.3], [0.6, 0.5]])
    with torch.no_grad():
        separate = model.encode_prompts(feats, pts, torch.tensor([0, 1]), torch.tensor([0, 1]), 2)
        averaged = model.encode_prompts(feats, pts, torch.tensor([0, 1]), torch.tensor([0, 0]), 1)
    assert torch.allclose(averaged[0], separate.mean(0), atol=1e-6)
    with pytest.raises(ValueError, match="slots"):
        model.encode_prompts(feats, pts, torch.tensor([0, 1]), torch.tensor([0, 2]), 3)


def test_save_and_load_round_trip_bit_identical(tiny, tmp_path, instances):
    model, processor = tiny
    with torch.no_grad():  # make LoRA matter: B starts at zero
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = KptLLMForKeypoints.from_pretrained(tmp_path).eval()
    loaded_processor = KptLLMProcessor.from_pretrained(tmp_path)
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(torch.equal(state[k], loaded_state[k]) for k in state)
    assert any("lora_A" in k for k in state)
    assert loaded_processor.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    batch = collate_samples(processor, _samples(processor, instances))
    batch2 = collate_samples(loaded_processor, _samples(loaded_processor, instances))
    assert all(torch.equal(batch[k], batch2[k]) for k in batch)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch2).logits)
    for name, param in model.named_parameters():  # restore the shared fixture
        if "lora_B" in name:
            param.data.zero_()


def test_tuning_policies():
    model, _ = build_tiny(seed=1, llm_tuning="full", vision_tuning="frozen")
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("language_model."))
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("vision_model."))
    assert not any("lora_" in n for n, _ in model.named_parameters())
    with pytest.raises(ValueError, match="llm_tuning"):
        build_tiny(seed=1, llm_tuning="partial")


@pytest.mark.parametrize("vision_config, grid", [
    (CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      image_size=56, patch_size=14), (4, 4)),
    (ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], image_size=64), (2, 2)),
    (Dinov2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  patch_size=14, image_size=56), (4, 4)),
])
def test_other_backbones_give_patch_tokens(vision_config, grid):
    tokenizer = train_tiny_tokenizer()
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1)
    size = 56 if grid == (4, 4) else 64
    config = KptLLMConfig(vision_config=vision_config, text_config=text, image_size=size, prompt_pe_dim=16,
                          prompt_extractor_heads=2, lora_r=2, lora_alpha=4,
                          image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                          kpt_token_id=tokenizer.convert_tokens_to_ids("<kpt>"))
    model = KptLLMForKeypoints(config).eval()
    assert config.patch_grid == grid
    with torch.no_grad():
        feats = model.encode_images(torch.randn(2, 3, size, size))
    assert feats.shape == (2, grid[0] * grid[1], config.vision_hidden_size)
    assert any("lora_A" in n for n, _ in model.vision_model.named_parameters())


def test_build_from_pretrained_parts_in_folders(tmp_path, instances):
    """The hub path (`vision=..., llm=...`) exercised on local folders of saved backbones."""
    tokenizer = train_tiny_tokenizer(placeholders=False)  # like Vicuna's: no <image> / <kpt> yet
    assert "<image>" not in tokenizer.get_vocab()
    vision, language_model = tiny_parts(tokenizer, seed=5)
    vision.save_pretrained(tmp_path / "vision")
    language_model.save_pretrained(tmp_path / "llm")
    tokenizer.save_pretrained(tmp_path / "llm")
    model, processor = build_from_parts(str(tmp_path / "vision"), str(tmp_path / "llm"), image_size=64,
                                        prompt_pe_dim=32, prompt_extractor_heads=2, lora_r=4, lora_alpha=8)
    reference = AutoModel.from_pretrained(tmp_path / "vision")
    for name, param in reference.state_dict().items():  # pretrained weights arrive unchanged (LoRA wraps them)
        key = name.replace("q_proj.weight", "q_proj.base_layer.weight").replace("v_proj.weight", "v_proj.base_layer.weight")
        key = key.replace("q_proj.bias", "q_proj.base_layer.bias").replace("v_proj.bias", "v_proj.base_layer.bias")
        assert torch.equal(model.vision_model.state_dict()[key], param), name
    llm = AutoModelForCausalLM.from_pretrained(tmp_path / "llm")
    old_rows = llm.get_input_embeddings().weight
    new_rows = model.language_model.get_input_embeddings().weight
    assert new_rows.shape[0] == old_rows.shape[0] + 2 == len(processor.tokenizer)  # resized for the placeholders
    assert torch.equal(new_rows[: old_rows.shape[0]], old_rows)
    assert model.language_model.get_output_embeddings().weight.shape[0] == new_rows.shape[0]
    assert model.config.lora_r == 4 and model.config.image_token_id == processor.image_token_id
    batch = collate_samples(processor, _samples(processor, instances))
    assert torch.isfinite(model(**batch).loss)
    assert np.isclose(sum(model.config.image_mean), sum((0.485, 0.456, 0.406)))


def test_collate_refuses_targets_and_support_points_outside_their_crop(tiny, instances):
    _, processor = tiny
    samples = _samples(processor, instances)
    q, s = samples[0].query, samples[2].supports[0]
    right, bottom = q.crop.to_image((1.2, 0.5)), s.crop.to_image((0.5, -0.1))
    outside_target = KeypointSample(Task.TEXT, q, "left eye", xy=tuple(right), text="left eye")
    with pytest.raises(ValueError, match=r"sample 1 \(text, 'left eye'\): target .* outside the query crop"):
        collate_samples(processor, [samples[0], outside_target])
    outside_support = KeypointSample(Task.VISUAL, q, "right eye", xy=samples[2].xy, supports=[s],
                                     support_points=[tuple(bottom)])
    with pytest.raises(ValueError, match=r"sample 0 \(visual, 'right eye'\): support point .* of support 0 is outside"):
        collate_samples(processor, [outside_support])
    outside_semantic = KeypointSample(Task.SEMANTIC, q, "nose", support_points=[tuple(right)])
    with pytest.raises(ValueError, match="sample 0 .* outside its crop"):
        collate_samples(processor, [outside_semantic])
    on_edge = KeypointSample(Task.TEXT, q, "left eye", xy=tuple(q.crop.to_image((1.0, 0.0))), text="left eye")
    collate_samples(processor, [on_edge])  # exactly on the crop edge is inside


def test_prompt_token_changes_with_the_point_and_with_the_support_image(tiny, instances):
    model, processor = tiny
    coco = next(i for i in instances if i.dataset == "coco")
    animal = next(i for i in instances if i.dataset == "ap10k")
    images = torch.stack([processor.prepare_image(coco.image, coco.bbox).pixel_values,
                          processor.prepare_image(animal.image, animal.bbox).pixel_values])
    with torch.no_grad():
        features = model.encode_images(images)
        points = torch.tensor([[0.3, 0.4], [0.7, 0.4], [0.3, 0.4], [0.3, 0.4]])
        z = model.encode_prompts(features, points, torch.tensor([0, 0, 1, 0]), torch.arange(4), 4)
    assert z.shape == (4, model.config.text_config.hidden_size) and torch.isfinite(z).all()
    assert torch.allclose(z[0], z[3], atol=1e-6)  # same point, same support
    assert not torch.allclose(z[0], z[1], atol=1e-4)  # another point on the same support
    assert not torch.allclose(z[0], z[2], atol=1e-4)  # the same point on another support image
