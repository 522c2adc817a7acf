"""`kptllm convert locllm`: a tiny fake LocLLM checkpoint in LocLLM's exact key layout and file format
(sharded pytorch_model-*.bin + index), converted and held to a reference forward written here from the
architecture (Meta's ViT block with fused qkv + layer scale + q/v LoRA, the projector, the LoRA'd LLaMA)."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, PreTrainedTokenizerFast

from kptllm.convert.locllm import ConversionError, convert_locllm
from kptllm.protocols.protocol import Task

REPO = Path(__file__).resolve().parents[2]
COCO = REPO / "tests" / "data" / "real" / "coco"
COCO_NAMES = ["nose", "left eye", "right eye", "left ear", "right ear", "left shoulder", "right shoulder", "left elbow",
              "right elbow", "left wrist", "right wrist", "left hip", "right hip", "left knee", "right knee",
              "left ankle", "right ankle"]
DESCRIPTIONS = {n: f"The {n} is a part of the person, near the {n.split()[-1]}." for n in COCO_NAMES}

# LocLLM-like sizes, shrunk: ViT pretrained at 518 px / patch 14 (37 x 37 positions), run at 224 px.
VIT_WIDTH, VIT_DEPTH, VIT_HEADS, VIT_MLP, PATCH, PRE_GRID = 128, 2, 2, 512, 14, 37
LLM_WIDTH, LLM_LAYERS, LLM_HEADS, LLM_INTER = 64, 2, 4, 128
LORA_R, LORA_ALPHA = 8, 16
QUESTION = "Where is the {} of this person in this image? Please provide its coordinates."


# ----------------------------------------------------------------------------- fake LocLLM pieces
def _constants_source(tmp: Path) -> Path:
    """A LocLLM code folder with its datasets/constants.py layout (the converter reads it with ast only)."""
    (tmp / "datasets").mkdir(parents=True)
    (tmp / "datasets" / "constants.py").write_text(
        f"COCO_KEYPOINT_NAME = {COCO_NAMES!r}\nMPII_KEYPOINT_NAME = ['x']\n"
        f"KeypointLocationDescription = {DESCRIPTIONS!r}\nKeypointLocationQuestion = {{}}\n"
        "raise RuntimeError('never executed')\n")
    return tmp


def _llama_like_tokenizer() -> PreTrainedTokenizerFast:
    """A SentencePiece-style (Metaspace, dummy prefix) BPE tokenizer with single-digit tokens, like Llama's."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    corpus = ["Image: Keypoint: Question: Answer: [0.412,0.305] [1.000,0.000] 0123456789 Key point"]
    corpus += [f"Keypoint: {DESCRIPTIONS[n]}\nQuestion: {QUESTION.format(n)}\nAnswer: [0.5,0.5]" for n in COCO_NAMES]
    trainer = trainers.BpeTrainer(vocab_size=300, show_progress=False, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=list("\n▁[],.:?0123456789"))
    tok.train_from_iterator(corpus * 3, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def _base_llm(tmp: Path) -> tuple[Path, LlamaConfig, PreTrainedTokenizerFast]:
    tokenizer = _llama_like_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=LLM_WIDTH, intermediate_size=LLM_INTER,
                         num_hidden_layers=LLM_LAYERS, num_attention_heads=LLM_HEADS, num_key_value_heads=LLM_HEADS,
                         max_position_embeddings=1024, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
                         tie_word_embeddings=False)
    tmp.mkdir(parents=True)
    config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return tmp, config, tokenizer


def _fake_state(vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with LocLLM's keys: frozen LLM in bf16, LoRA and vision in fp32."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *shape, s=0.05: torch.randn(*shape, generator=g) * s  # noqa: E731
    w, h = VIT_WIDTH, VIT_MLP
    sd = {"vision_model.cls_token": rnd(1, 1, w, s=0.5), "vision_model.mask_token": torch.zeros(1, w),
          "vision_model.pos_embed": rnd(1, 1 + PRE_GRID ** 2, w, s=0.5),
          "vision_model.patch_embed.proj.weight": rnd(w, 3, PATCH, PATCH), "vision_model.patch_embed.proj.bias": rnd(w),
          "vision_model.norm.weight": 1 + rnd(w), "vision_model.norm.bias": rnd(w)}
    for i in range(VIT_DEPTH):
        b = f"vision_model.blocks.{i}."
        sd.update({b + "norm1.weight": 1 + rnd(w), b + "norm1.bias": rnd(w), b + "norm2.weight": 1 + rnd(w),
                   b + "norm2.bias": rnd(w), b + "attn.qkv.weight": rnd(3 * w, w, s=0.1), b + "attn.qkv.bias": rnd(3 * w),
                   b + "attn.proj.weight": rnd(w, w, s=0.1), b + "attn.proj.bias": rnd(w), b + "ls1.gamma": 0.5 + rnd(w),
                   b + "ls2.gamma": 0.5 + rnd(w), b + "mlp.fc1.weight": rnd(h, w, s=0.1), b + "mlp.fc1.bias": rnd(h),
                   b + "mlp.fc2.weight": rnd(w, h, s=0.1), b + "mlp.fc2.bias": rnd(w)})
        for name in "qv":  # trained LoRA: B is non-zero
            sd[b + f"attn.lora_A_{name}"] = rnd(LORA_R, w, s=0.1)
            sd[b + f"attn.lora_B_{name}"] = rnd(w, LORA_R, s=0.1)
    d = LLM_WIDTH
    sd["mm_projector.weight"], sd["mm_projector.bias"] = rnd(d, w, s=0.1), rnd(d)
    llm = {"model.embed_tokens.weight": rnd(vocab, d, s=0.5), "model.norm.weight": 1 + rnd(d),
           "lm_head.weight": rnd(vocab, d, s=0.3)}
    inv_freq = 1.0 / (10000 ** (torch.arange(0, d // LLM_HEADS, 2).float() / (d // LLM_HEADS)))
    for i in range(LLM_LAYERS):
        b = f"model.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            llm[b + f"self_attn.{proj}.weight"] = rnd(d, d, s=0.15)
        llm.update({b + "mlp.gate_proj.weight": rnd(LLM_INTER, d, s=0.15), b + "mlp.up_proj.weight": rnd(LLM_INTER, d, s=0.15),
                    b + "mlp.down_proj.weight": rnd(d, LLM_INTER, s=0.15), b + "input_layernorm.weight": 1 + rnd(d),
                    b + "post_attention_layernorm.weight": 1 + rnd(d)})
        sd[b + "self_attn.rotary_emb.inv_freq"] = inv_freq.clone()
        for proj in ("q_proj", "v_proj"):
            sd[b + f"self_attn.{proj}.lora_A"] = rnd(LORA_R, d, s=0.1)
            sd[b + f"self_attn.{proj}.lora_B"] = rnd(d, LORA_R, s=0.1)
    sd.update({k: v.to(torch.bfloat16) for k, v in llm.items()})
    return sd


def _write_sharded(sd: dict[str, torch.Tensor], folder: Path, vocab: int, legacy: bool) -> Path:
    """LocLLM's trainer output: pytorch_model-0000k-of-00002.bin + pytorch_model.bin.index.json + config."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(sd)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
    weight_map = {}
    for k, part in enumerate(halves, 1):
        name = f"pytorch_model-{k:05d}-of-00002.bin"
        torch.save({key: sd[key] for key in part}, folder / name)
        weight_map.update({key: name for key in part})
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "locllm", "architectures": ["LocLLMModel"], "crop_size": 224, "num_patches": 256,
        "im_patch_token": vocab, "lora_vision_r": LORA_R, "lora_vision_alpha": LORA_ALPHA, "lora_vision_enable": True,
        "lora_llm_r": LORA_R, "lora_llm_alpha": LORA_ALPHA, "lora_llm_dropout": 0.05, "lora_llm_enable": True,
        "hidden_size": LLM_WIDTH, "num_hidden_layers": LLM_LAYERS, "vocab_size": vocab}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer", "legacy": legacy}))
    return folder


# ----------------------------------------------------------------------------- reference forward
def _ref_pos_embed(pos: torch.Tensor, grid: int) -> torch.Tensor:
    n = pos.shape[1] - 1
    side = int(math.sqrt(n))
    patches = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, scale_factor=((grid + 0.1) / side, (grid + 0.1) / side), mode="bicubic")
    return torch.cat([pos[:, :1], patches.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1)


def reference_visual_tokens(sd, pixels: torch.Tensor) -> torch.Tensor:
    """Meta's DINOv2 ViT (fused qkv, layer scale) with LocLLM's q/v LoRA; `x_norm_patchtokens` -> mm_projector."""
    p = "vision_model."
    x = F.conv2d(pixels, sd[p + "patch_embed.proj.weight"], sd[p + "patch_embed.proj.bias"], stride=PATCH)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd[p + "cls_token"].expand(x.shape[0], -1, -1), x], dim=1)
    x = x + _ref_pos_embed(sd[p + "pos_embed"], pixels.shape[-1] // PATCH)
    scale = LORA_ALPHA / LORA_R
    for i in range(VIT_DEPTH):
        b = f"{p}blocks.{i}."
        y = F.layer_norm(x, (VIT_WIDTH,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], eps=1e-6)
        B, N, C = y.shape
        qkv = F.linear(y, sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"]).reshape(B, N, 3, C).permute(2, 0, 1, 3)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = q + F.linear(F.linear(y, sd[b + "attn.lora_A_q"]), sd[b + "attn.lora_B_q"]) * scale
        v = v + F.linear(F.linear(y, sd[b + "attn.lora_A_v"]), sd[b + "attn.lora_B_v"]) * scale
        heads = lambda t: t.reshape(B, N, VIT_HEADS, -1).permute(0, 2, 1, 3)  # noqa: E731
        q, k, v = heads(q), heads(k), heads(v)
        attn = ((q * (C // VIT_HEADS) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        y = F.linear((attn @ v).transpose(1, 2).reshape(B, N, C), sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"])
        x = x + sd[b + "ls1.gamma"] * y
        y = F.layer_norm(x, (VIT_WIDTH,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], eps=1e-6)
        y = F.linear(F.gelu(F.linear(y, sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"])),
                     sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"])
        x = x + sd[b + "ls2.gamma"] * y
    x = F.layer_norm(x, (VIT_WIDTH,), sd[p + "norm.weight"], sd[p + "norm.bias"], eps=1e-6)
    return x[:, 1:]


def _rms(x, weight, eps=1e-5):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rope(x, positions):
    half = x.shape[-1] // 2
    inv_freq = 1.0 / (10000 ** (torch.arange(0, x.shape[-1], 2).float() / x.shape[-1]))
    angles = positions[:, None].float() * inv_freq[None]
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def reference_logits(sd, ids: list[int], image_token_id: int, image_features: torch.Tensor) -> torch.Tensor:
    """LocLLM's forward: embed text around the consecutive image-patch ids, splice the projected features,
    run the LoRA'd LLaMA (eval: no dropout) and return the last position's logits."""
    f32 = {k: v.float() for k, v in sd.items()}
    ids_t = torch.tensor(ids)
    where = (ids_t == image_token_id).nonzero()[:, 0]
    start, count = int(where[0]), len(where)
    assert count == image_features.shape[0] and bool((where == torch.arange(start, start + count)).all())
    emb = f32["model.embed_tokens.weight"]
    x = torch.cat([emb[ids_t[:start]], image_features, emb[ids_t[start + count:]]])
    L, d = x.shape
    hd = d // LLM_HEADS
    positions = torch.arange(L)
    causal = torch.full((L, L), float("-inf")).triu(1)
    scale = LORA_ALPHA / LORA_R
    for i in range(LLM_LAYERS):
        b = f"model.layers.{i}."
        y = _rms(x, f32[b + "input_layernorm.weight"])
        proj = lambda name: y @ f32[b + f"self_attn.{name}.weight"].T  # noqa: E731
        q = proj("q_proj") + (y @ f32[b + "self_attn.q_proj.lora_A"].T) @ f32[b + "self_attn.q_proj.lora_B"].T * scale
        k = proj("k_proj")
        v = proj("v_proj") + (y @ f32[b + "self_attn.v_proj.lora_A"].T) @ f32[b + "self_attn.v_proj.lora_B"].T * scale
        q, k, v = (t.reshape(L, LLM_HEADS, hd).transpose(0, 1) for t in (q, k, v))
        q, k = _rope(q, positions), _rope(k, positions)
        attn = ((q @ k.transpose(-2, -1)) / math.sqrt(hd) + causal).softmax(-1)
        x = x + (attn @ v).transpose(0, 1).reshape(L, d) @ f32[b + "self_attn.o_proj.weight"].T
        y = _rms(x, f32[b + "post_attention_layernorm.weight"])
        gate, up = y @ f32[b + "mlp.gate_proj.weight"].T, y @ f32[b + "mlp.up_proj.weight"].T
        x = x + (F.silu(gate) * up) @ f32[b + "mlp.down_proj.weight"].T
    return _rms(x, f32["model.norm.weight"])[-1] @ f32["lm_head.weight"].T


def reference_prompt_ids(tokenizer, name: str, legacy: bool, patch_token_id: int) -> list[int]:
    """transformers 4.31's slow LlamaTokenizer on LocLLM's prompt string: split on the added `<im_patch>`,
    strip whitespace on both sides of it, SentencePiece-encode each chunk (dummy "▁"; non-legacy drops it
    on chunks after the first), BOS first."""
    conv = f"Keypoint: {DESCRIPTIONS[name]}\nQuestion: {QUESTION.format(name)}\nAnswer:"
    prompt = "Image: " + "<im_patch>" * 256 + "\n" + conv
    parts = [p for p in re.split(r"(<im_patch>)", prompt) if p != ""]
    for i, part in enumerate(parts):
        if part == "<im_patch>":
            if i > 0 and parts[i - 1] != "<im_patch>":
                parts[i - 1] = parts[i - 1].rstrip()
            if i + 1 < len(parts) and parts[i + 1] != "<im_patch>":
                parts[i + 1] = parts[i + 1].lstrip()
    ids, first = [tokenizer.bos_token_id], True
    for part in parts:
        if part == "<im_patch>":
            ids.append(patch_token_id)
        elif part:
            pieces = tokenizer.tokenize(part)
            if not legacy and not first and pieces[0].startswith("▁"):
                pieces = ([pieces[0][1:]] if len(pieces[0]) > 1 else []) + pieces[1:]
            ids += [tokenizer.convert_tokens_to_ids(p) for p in pieces]
        first = False
    return ids


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("locllm")
    base, config, tokenizer = _base_llm(tmp / "vicuna")
    sd = _fake_state(config.vocab_size)
    ckpt = _write_sharded(sd, tmp / "coco", config.vocab_size, legacy=False)
    source = _constants_source(tmp / "LocLLM")
    out = tmp / "converted"
    model, processor = convert_locllm(ckpt, base, source, out=out, dtype=torch.float32)
    return {"tmp": tmp, "base": base, "config": config, "tokenizer": tokenizer, "sd": sd, "ckpt": ckpt,
            "source": source, "out": out, "model": model, "processor": processor}


# ----------------------------------------------------------------------------- equivalence
def test_visual_tokens_and_logits_match_the_reference(fake):
    model, processor, sd = fake["model"], fake["processor"], fake["sd"]
    sd32 = {k: v.float() for k, v in sd.items()}
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours = model.encode_images(pixels)
        ref = reference_visual_tokens(sd32, pixels)
        assert ours.shape == ref.shape == (2, 256, VIT_WIDTH)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
        ref_proj = F.linear(ref, sd32["mm_projector.weight"], sd32["mm_projector.bias"])
        torch.testing.assert_close(model.project_image(ours), ref_proj, atol=1e-5, rtol=1e-5)

        conversation = processor.protocol.conversation(Task.TEXT, "left eye")
        enc = processor.encode_conversation(conversation)
        ids = enc.prefix_ids + enc.query_ids
        embeds = model.embed_inputs(torch.tensor([ids]), image_tokens=model.project_image(ours[:1]))
        logits = model.language_model(inputs_embeds=embeds).logits[0, -1]
        ref_ids = [fake["config"].vocab_size if t == processor.image_token_id else t for t in ids]
        ref_logits = reference_logits(sd, ref_ids, fake["config"].vocab_size, ref_proj[0])
    assert logits.shape == ref_logits.shape == (fake["config"].vocab_size,)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("legacy", [False, True])
def test_prompt_ids_match_a_431_style_tokenisation(fake, legacy):
    from kptllm.modeling.configuration import KptLLMConfig
    from kptllm.processor import KptLLMProcessor

    config = KptLLMConfig.from_pretrained(fake["out"])
    config.protocol_options = {**config.protocol_options, "legacy_tokenizer": legacy}
    from transformers import AutoTokenizer

    processor = KptLLMProcessor(AutoTokenizer.from_pretrained(fake["out"]), config)
    base = fake["tokenizer"]
    for name in ("nose", "left shoulder", "right ankle"):
        enc = processor.encode_conversation(processor.protocol.conversation("text", name))
        ours = [-1 if t == processor.image_token_id else t for t in enc.prefix_ids + enc.query_ids]
        assert ours == reference_prompt_ids(base, name, legacy, -1)
    assert processor.protocol.max_new_tokens == 13


def test_converted_config_carries_the_locllm_protocol(fake):
    from kptllm.modeling.configuration import KptLLMConfig

    config = KptLLMConfig.from_pretrained(fake["out"])
    assert config.protocol == "locllm" and config.crop_padding == 1.0
    assert config.crop_fill == "black" and config.crop_interpolation == "bilinear"
    assert config.image_mean == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert config.protocol_options["descriptions"] == DESCRIPTIONS
    assert config.protocol_options["legacy_tokenizer"] is False  # from the checkpoint's tokenizer_config.json
    assert config.vision_config.image_size == 224 and config.num_image_tokens == 256
    assert (config.lora_r, config.lora_alpha, sorted(config.lora_target_modules)) == (8, 16, ["q_proj", "v_proj"])
    files = {p.name for p in fake["out"].iterdir()}
    assert "model.safetensors" in files and "config.json" in files and "tokenizer.json" in files


# ----------------------------------------------------------------------------- predictor, CLI, eval
def test_predictor_serves_text_and_refuses_other_tasks(fake):
    from kptllm import KeypointPredictor

    predictor = KeypointPredictor.from_pretrained(fake["out"], device="cpu")
    assert predictor.supported_tasks == frozenset({Task.TEXT})
    predictor.set_image(COCO / "000000000785.jpg", bbox=(280, 40, 220, 330))
    results = predictor.detect(["nose", "left_eye"])
    assert len(results) == 2 and all(len(predictor.processor.tokenizer.encode(r.raw, add_special_tokens=False)) <= 14
                                     for r in results)
    with pytest.raises(ValueError, match="cannot do the semantic task"):
        predictor.describe((300, 100))
    with pytest.raises(ValueError, match="cannot do the visual task"):
        predictor.detect_from_example(COCO / "000000000785.jpg", [(300, 100)])
    with pytest.raises(ValueError, match="only knows the keypoints"):
        predictor.detect(["left wing"])


def test_batched_path_asks_in_the_checkpoints_own_words(fake):
    """The evaluation runner's batched path (any --batch > 1) must send LocLLM's prompt, decode LocLLM's 13
    tokens and refuse names LocLLM does not know, exactly as the predictor does."""
    from kptllm import KeypointPredictor
    from kptllm.decoding.engine import Request

    predictor = KeypointPredictor.from_pretrained(fake["out"], device="cpu")
    image, box = COCO / "000000000785.jpg", (280, 40, 220, 330)
    predictor.set_image(image, bbox=box)
    names = ["nose", "left eye", "right knee"]
    single = predictor.detect(names)
    boxes = [box] + [(280 + 7 * k, 40 + 5 * k, 220 - 6 * k, 330 - 9 * k) for k in range(1, 16)]
    requests = [Request(image=image, bbox=b, task=Task.TEXT, texts=names[: 1 + k % 3]) for k, b in enumerate(boxes)]
    batched = predictor.engine.answer(requests)  # 16 requests, one decoding batch
    assert [r.raw for r in batched[0]] == [r.raw for r in predictor.detect(names[:1])]
    for request, answers in zip(requests[1:], batched[1:]):  # each as the predictor answers it alone
        predictor.set_image(image, bbox=request.bbox)
        alone = predictor.detect(request.texts)
        assert [r.raw for r in answers] == [r.raw for r in alone]
        assert [r.xy for r in answers] == [r.xy for r in alone]
    predictor.set_image(image, bbox=box)
    assert [r.raw for r in predictor.detect(names)] == [r.raw for r in single]
    with pytest.raises(ValueError, match="only knows the keypoints"):
        predictor.engine.answer([Request(image=image, bbox=box, task=Task.TEXT, texts=["left wing"])])
    with pytest.raises(ValueError, match="cannot do the semantic task"):
        predictor.engine.answer([Request(image=image, bbox=box, task=Task.SEMANTIC, texts=[None], points=[(300, 100)])])


def test_locllm_prefix_texts_in_one_call_equal_one_decode_per_prefix(fake):
    processor = fake["processor"]
    for text in (" [0.412,0.305]", "left eye [0.4, 0.3]", "\u00e9t\u00e9 \u4e2d"):
        ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert processor.decode_prefixes(ids) == [processor.decode(ids[:k + 1]) for k in range(len(ids))]


def test_locllm_answer_parsing_and_score():
    from kptllm.protocols.checkpoints import LocLLMProtocol

    protocol = LocLLMProtocol({"descriptions": DESCRIPTIONS})
    parsed = protocol.parse(" [0.412,0.305]", "text", "left eye")
    assert parsed.xy == (0.412, 0.305) and parsed.semantics == "left eye"
    assert not hasattr(protocol.parse("left eye [0.4, 0.3]", "text", "left eye"), "xy")
    assert not hasattr(protocol.parse("[1.412,0.305]", "text", "nose"), "xy")
    pieces = ["▁[", "0", ".", "4", "1", "2", ",", "0", ".", "3", "0", "5", "]"]
    probs = [0.9, 1, 1, 0.5, 0.5, 0.5, 0.9, 1, 1, 1, 1, 1, 0.9]
    assert protocol.score(pieces, probs, Task.TEXT) == pytest.approx((0.7 + 1.0) / 2)


def test_cli_predict_and_eval_on_the_converted_model(fake, tmp_path, capsys):
    from evaluation.cli import main

    image = COCO / "000000000785.jpg"
    assert main(["predict", "--model", str(fake["out"]), "--image", str(image), "--bbox", "280,40,220,330",
                 "--keypoints", "nose,left eye", "--json", "--device", "cpu"]) == 0
    rows = json.loads(capsys.readouterr().out)["keypoints"]
    assert [r["name"] for r in rows] == ["nose", "left eye"]
    assert main(["predict", "--model", str(fake["out"]), "--image", str(image), "--point", "300,100"]) == 2
    assert "cannot do the semantic task" in capsys.readouterr().err
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(fake["out"]), "--benchmark", "coco", "--annotations",
                 str(COCO / "test_coco.json"), "--images", str(COCO), "--task", "text", "--limit", "1",
                 "--out", str(out)]) == 0
    record = json.loads((out / "record.json").read_text())
    assert record["task"] == "text" and record["counts"]
    one_by_one = tmp_path / "eval1"
    assert main(["eval", "--model", str(fake["out"]), "--benchmark", "coco", "--annotations",
                 str(COCO / "test_coco.json"), "--images", str(COCO), "--task", "text", "--limit", "1",
                 "--batch", "1", "--out", str(one_by_one)]) == 0
    answers = lambda run: [json.loads(f.read_text())["predictions"] for f in sorted((run / "chunks").glob("*.json"))]  # noqa: E731
    assert answers(one_by_one) == answers(out)  # the raw answers too: same prompt, same 13-token budget


# ----------------------------------------------------------------------------- bad sources
def test_missing_shard_is_one_clear_error(fake, tmp_path):
    broken = tmp_path / "coco"
    shutil.copytree(fake["ckpt"], broken)
    (broken / "pytorch_model-00002-of-00002.bin").unlink()
    with pytest.raises(ConversionError, match=r"incomplete: 1 shard\(s\) listed in pytorch_model.bin.index.json are missing"):
        convert_locllm(broken, fake["base"], fake["source"], dtype=torch.float32)


def test_wrong_shape_is_one_clear_error(fake, tmp_path):
    sd = dict(fake["sd"])
    sd["model.layers.1.mlp.up_proj.weight"] = torch.zeros(LLM_INTER + 1, LLM_WIDTH, dtype=torch.bfloat16)
    ckpt = _write_sharded(sd, tmp_path / "coco", fake["config"].vocab_size, legacy=False)
    with pytest.raises(ConversionError, match=r"'model.layers.1.mlp.up_proj.weight' has shape \(129, 64\), expected \(128, 64\)"):
        convert_locllm(ckpt, fake["base"], fake["source"], dtype=torch.float32)


def test_unknown_vision_tensor_is_one_clear_error(fake, tmp_path):
    """Register tokens (or a LoRA on k) would change the visual encoder: refused, never dropped in silence."""
    sd = dict(fake["sd"], **{"vision_model.register_tokens": torch.zeros(1, 4, VIT_WIDTH)})
    ckpt = _write_sharded(sd, tmp_path / "coco", fake["config"].vocab_size, legacy=False)
    with pytest.raises(ConversionError, match=r"1 visual-encoder tensor\(s\) this converter does not know: vision_model.register_tokens"):
        convert_locllm(ckpt, fake["base"], fake["source"], dtype=torch.float32)


def test_a_vision_lora_on_v_alone_is_merged_with_its_scale(fake, tmp_path):
    sd = {k: v for k, v in fake["sd"].items() if not k.endswith(("attn.lora_A_q", "attn.lora_B_q"))}
    ckpt = _write_sharded(sd, tmp_path / "coco", fake["config"].vocab_size, legacy=False)
    model, _ = convert_locllm(ckpt, fake["base"], fake["source"], dtype=torch.float32)
    b = "vision_model.blocks.0."
    qkv = sd[b + "attn.qkv.weight"].float().split(VIT_WIDTH)
    expected_v = qkv[2] + (LORA_ALPHA / LORA_R) * (sd[b + "attn.lora_B_v"].float() @ sd[b + "attn.lora_A_v"].float())
    attention = model.vision_model.encoder.layer[0].attention
    assert torch.allclose(attention.v_proj.weight, expected_v, atol=1e-5)
    assert torch.allclose(attention.q_proj.weight, qkv[0])


def test_non_locllm_checkpoint_is_one_clear_error(fake, tmp_path, tiny_dir, capsys):
    with pytest.raises(ConversionError, match="is not a LocLLM checkpoint"):
        convert_locllm(tiny_dir, fake["base"], fake["source"], dtype=torch.float32)
    from kptllm.cli import main

    assert main(["convert", "locllm", "--checkpoint", str(tiny_dir), "--base-llm", str(fake["base"]),
                 "--source", str(fake["source"]), "--out", str(tmp_path / "x"), "--dtype", "float32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a LocLLM checkpoint" in err


def test_missing_source_and_empty_folder_errors(fake, tmp_path):
    with pytest.raises(ConversionError, match="LocLLM source file not found"):
        convert_locllm(fake["ckpt"], fake["base"], tmp_path, dtype=torch.float32)
    with pytest.raises(ConversionError, match="no model.safetensors or pytorch_model"):
        convert_locllm(tmp_path, fake["base"], fake["source"], dtype=torch.float32)


def test_safetensors_checkpoint_reads_the_same(fake, tmp_path):
    from safetensors.torch import save_file

    from kptllm.convert.locllm import read_state_dict

    folder = tmp_path / "st"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in fake["sd"].items()}, folder / "model.safetensors")
    state = read_state_dict(folder)
    assert state.keys() == fake["sd"].keys()
    assert all(torch.equal(state[k], fake["sd"][k]) for k in state)


def test_the_demo_serves_the_converted_model(fake, tmp_path):
    """The converted checkpoint behind the Gradio app: the text-prompt endpoint answers, task (a) is refused."""
    import socket

    from gradio_client import Client, handle_file

    from demo.app import build_demo, launch_options
    from demo.model import load_model

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from demo.boxes import Detectors

    demo = build_demo(load_model(str(fake["out"]), device="cpu"), Detectors(None))
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options())
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path))
        image = str(Path(__file__).resolve().parents[1] / "data" / "real" / "coco" / "000000000785.jpg")
        _, table, _, js, *_ = client.predict(handle_file(image), "COCO person (17)", "nose\nleft eye", False,
                                             "280,44,218,346", 0.0, api_name="/detect_text")
        rows = table["data"] if isinstance(table, dict) else table
        assert [row[2] for row in rows] == ["nose", "left eye"]
        with pytest.raises(Exception, match="(?i)locllm|support|task"):
            client.predict(handle_file(image), 367, 81, "280,44,218,346", api_name="/describe")
    finally:
        demo.close()


def _llm_in_bfloat16(sd):
    """LocLLM's own layout: the frozen LLM in bfloat16; vision tower, projector and LoRA in float32."""
    return {k: v.to(torch.bfloat16) if k.startswith(("model.", "lm_head.")) and "lora_" not in k else v
            for k, v in sd.items()}


def test_each_part_keeps_its_source_precision(fake, tmp_path):
    """By default a part stays in the dtype LocLLM stored it in, and a model loaded in bfloat16 keeps the
    float32 parts float32 (its LoRA unmerged): the visual tokens are then LocLLM's float32 ones, where an
    all-bfloat16 conversion is off by ~1e-2. `--dtype` still puts everything in one dtype."""
    from safetensors import safe_open

    from kptllm import KeypointPredictor

    sd = _llm_in_bfloat16(fake["sd"])
    ckpt = _write_sharded(sd, tmp_path / "coco", fake["config"].vocab_size, legacy=False)
    out = tmp_path / "source"
    convert_locllm(ckpt, fake["base"], fake["source"], out=out)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    assert {v for k, v in dtypes.items() if k.startswith("vision_model.")} == {"F32"}
    assert dtypes["projector.weight"] == "F32"
    assert {v for k, v in dtypes.items() if "lora_" in k} == {"F32"}
    assert {v for k, v in dtypes.items() if k.startswith("language_model.") and "lora_" not in k} == {"BF16"}

    sd32 = {k: v.float() for k, v in sd.items()}
    torch.manual_seed(0)
    pixels = torch.randn(1, 3, 224, 224)
    reference = F.linear(reference_visual_tokens(sd32, pixels), sd32["mm_projector.weight"], sd32["mm_projector.bias"])
    errors = {}
    for name, folder in (("source", out), ("bfloat16", tmp_path / "bf16")):
        if name == "bfloat16":
            convert_locllm(ckpt, fake["base"], fake["source"], out=folder, dtype=torch.bfloat16)
        predictor = KeypointPredictor.from_pretrained(folder, device="cpu", dtype=torch.bfloat16)
        model = predictor.model
        with torch.no_grad():
            errors[name] = float((model.project_image(model.encode_images(pixels)).float() - reference).abs().max())
        if name == "source":
            assert model.vision_model.embeddings.patch_embeddings.projection.weight.dtype == torch.float32
            assert model.language_model.get_input_embeddings().weight.dtype == torch.bfloat16
            lora = [p for n, p in model.named_parameters() if "lora_" in n]
            assert lora and all(p.dtype == torch.float32 for p in lora)  # not merged into the bfloat16 weights
            predictor.set_image(COCO / "000000000785.jpg", bbox=(280, 40, 220, 330))
            assert all(r.raw for r in predictor.detect(["nose", "left eye"]))  # the parts meet without dtype errors
    assert errors["source"] < 1e-4 < 1e-3 < errors["bfloat16"], errors
