"""Import LocLLM's released checkpoint (Wang et al., CVPR 2024; github.com/kennethwdk/LocLLM, MIT).

    kptllm convert locllm --checkpoint DIR --base-llm DIR_OR_ID --source LOCLLM_CODE_DIR --out OUT

LocLLM is Meta's DINOv2 ViT-L/14 (run at 224 px: 16 x 16 patch tokens after the final LayerNorm, CLS
dropped) + `mm_projector` (one Linear) + Vicuna-7B, with LoRA (bare `lora_A` / `lora_B`) on the ViT's
q and v (inside the fused qkv) and on the LLM's q_proj / v_proj. Its checkpoint (`pytorch_model-*.bin`
shards with an index, or safetensors) holds all of it, frozen weights included. The converted
checkpoint is an ordinary `KptLLMForKeypoints` folder (safetensors + config + tokenizer):

- vision: qkv split into q/k/v, the vision LoRA merged into q and v (scale alpha/r), `ls*.gamma` ->
  `layer_scale*.lambda1`, the 37 x 37 position table interpolated once to 16 x 16 the way LocLLM's
  DINOv2 does it (bicubic, `scale_factor=(16 + 0.1) / 37`) and stored at that size, so transformers'
  `Dinov2Model` never interpolates again;
- LLM: Vicuna's weights plus the LoRA in peft's layout (r, alpha from the checkpoint; scale alpha/r),
  rotary `inv_freq` buffers dropped; the tokenizer is the base LLM's with our `<image>` / `<kpt>`
  placeholders added (their ids lie past the embedding table: the model never looks them up);
- protocol "locllm" (`kptllm.protocols.checkpoints.LocLLMProtocol`): LocLLM's prompt with the per-keypoint
  descriptions read from LocLLM's own `datasets/constants.py` (parsed with `ast`, never executed);
  crop: square of side max(w, h) (no padding), bilinear, black border, CLIP mean/std.

Only tensors are read (`torch.load(weights_only=True)` / safetensors); nothing from the checkpoint or
the LocLLM source is executed.
"""

from __future__ import annotations

import ast
import json
import math
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CROP_SIZE = 224
VISION_PREFIX = "vision_model."


class ConversionError(ValueError):
    """The source is not a usable LocLLM checkpoint (one clear message, no traceback in the CLI)."""


# ------------------------------------------------------------------------- reading
def _index_files(directory: Path, index_name: str) -> list[Path]:
    index = json.loads((directory / index_name).read_text())
    names = sorted(set(index.get("weight_map", {}).values()))
    if not names:
        raise ConversionError(f"{directory / index_name} has an empty weight_map")
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise ConversionError(f"checkpoint {directory} is incomplete: {len(missing)} shard(s) listed in {index_name} "
                              f"are missing ({', '.join(missing)})")
    return [directory / n for n in names]


def checkpoint_files(directory) -> list[Path]:
    """The weight files of a checkpoint folder: safetensors (index or single) first, else PyTorch .bin."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConversionError(f"checkpoint folder not found: {directory}")
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (directory / index_name).is_file():
            return _index_files(directory, index_name)
    for pattern in ("model.safetensors", "*.safetensors", "pytorch_model.bin", "pytorch_model*.bin"):
        found = sorted(directory.glob(pattern))
        if found:
            return found
    raise ConversionError(f"no model.safetensors or pytorch_model*.bin (with or without an index) in {directory}")


def read_state_dict(directory) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder (memory-mapped where the format allows)."""
    state: dict[str, torch.Tensor] = {}
    for path in checkpoint_files(directory):
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                part = load_file(str(path))
            else:
                try:
                    part = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError:  # old (non-zip) serialisation cannot be memory-mapped
                    part = torch.load(path, map_location="cpu", weights_only=True)
        except ConversionError:
            raise
        except Exception as err:  # noqa: BLE001 - any reader failure is one clear message
            raise ConversionError(f"cannot read {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
        if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor) for v in part.values()):
            raise ConversionError(f"{path} is not a state dict of tensors")
        state.update(part)
    return state


def read_descriptions(source) -> tuple[list[str], dict[str, str]]:
    """COCO keypoint names and LocLLM's per-keypoint descriptions from LocLLM's `datasets/constants.py` (via `ast`)."""
    source = Path(source)
    path = source / "datasets" / "constants.py" if source.is_dir() else source
    if not path.is_file():
        raise ConversionError(f"LocLLM source file not found: {path} (give the LocLLM code folder with --source)")
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as err:
        raise ConversionError(f"cannot parse {path}: {err}") from None
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("COCO_KEYPOINT_NAME", "KeypointLocationDescription"):
                try:
                    values[node.targets[0].id] = ast.literal_eval(node.value)
                except ValueError:
                    raise ConversionError(f"{path}: {node.targets[0].id} is not a literal") from None
    names, descriptions = values.get("COCO_KEYPOINT_NAME"), values.get("KeypointLocationDescription")
    if not isinstance(names, list) or not isinstance(descriptions, dict):
        raise ConversionError(f"{path} does not define COCO_KEYPOINT_NAME and KeypointLocationDescription")
    missing = [n for n in names if n not in descriptions]
    if missing:
        raise ConversionError(f"{path}: no description for {missing}")
    return list(names), {n: descriptions[n] for n in names}


# ------------------------------------------------------------------------- vision
def interpolate_position_table(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """LocLLM's DINOv2 `interpolate_pos_encoding` for a `grid x grid` input: `[1, 1+N, D]` -> `[1, 1+grid^2, D]`."""
    dtype = pos_embed.dtype
    table = pos_embed.float()
    cls, patches = table[:, :1], table[:, 1:]
    side = math.sqrt(patches.shape[1])
    if int(side) ** 2 != patches.shape[1]:
        raise ConversionError(f"pos_embed has {patches.shape[1]} patch positions, not a square grid")
    side = int(side)
    if side == grid:
        return pos_embed
    factor = (grid + 0.1) / side  # the original adds 0.1 to avoid a floating-point off-by-one
    resized = nn.functional.interpolate(patches.reshape(1, side, side, -1).permute(0, 3, 1, 2),
                                        scale_factor=(factor, factor), mode="bicubic")
    if resized.shape[-2:] != (grid, grid):
        raise ConversionError(f"interpolating the {side}x{side} position table gave {tuple(resized.shape[-2:])}")
    return torch.cat([cls, resized.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1).to(dtype)


def vision_dims(state: dict[str, torch.Tensor]) -> dict:
    pos = state[VISION_PREFIX + "pos_embed"]
    width = pos.shape[-1]
    depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith(VISION_PREFIX + "blocks."))
    patch = state[VISION_PREFIX + "patch_embed.proj.weight"].shape[-1]
    hidden = state[VISION_PREFIX + "blocks.0.mlp.fc1.weight"].shape[0]
    return {"width": width, "depth": depth, "patch": patch, "mlp_hidden": hidden}


def convert_vision(state: dict[str, torch.Tensor], grid: int, lora_scale: float) -> dict[str, torch.Tensor]:
    """Meta DINOv2 (+ LocLLM's q/v LoRA) -> transformers `Dinov2Model` keys, LoRA merged."""
    p = VISION_PREFIX
    dims = vision_dims(state)
    width = dims["width"]
    out = {
        "embeddings.cls_token": state[p + "cls_token"],
        "embeddings.mask_token": state[p + "mask_token"].reshape(1, width) if p + "mask_token" in state
        else torch.zeros(1, width, dtype=state[p + "cls_token"].dtype),
        "embeddings.position_embeddings": interpolate_position_table(state[p + "pos_embed"], grid),
        "embeddings.patch_embeddings.projection.weight": state[p + "patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": state[p + "patch_embed.proj.bias"],
        "layernorm.weight": state[p + "norm.weight"],
        "layernorm.bias": state[p + "norm.bias"],
    }
    known = {p + k for k in ("cls_token", "mask_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
                             "norm.weight", "norm.bias")}
    for i in range(dims["depth"]):
        known |= {f"{p}blocks.{i}.{k}" for k in (
            "attn.qkv.weight", "attn.qkv.bias", "attn.lora_A_q", "attn.lora_B_q", "attn.lora_A_v", "attn.lora_B_v",
            "ls1.gamma", "ls2.gamma", *(f"{m}.{w}" for m in ("norm1", "norm2", "attn.proj", "mlp.fc1", "mlp.fc2")
                                          for w in ("weight", "bias")))}
    unexpected = sorted(k for k in state if k.startswith(p) and k not in known)
    if unexpected:  # e.g. register tokens or a LoRA on k: converting without them would change the model
        raise ConversionError(f"{len(unexpected)} visual-encoder tensor(s) this converter does not know: "
                              f"{', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
    for i in range(dims["depth"]):
        src, dst = f"{p}blocks.{i}.", f"encoder.layer.{i}."
        qkv_w, qkv_b = state[src + "attn.qkv.weight"].float(), state[src + "attn.qkv.bias"]
        if qkv_w.shape != (3 * width, width):
            raise ConversionError(f"{src}attn.qkv.weight has shape {tuple(qkv_w.shape)}, expected {(3 * width, width)}")
        weights = dict(zip("qkv", qkv_w.split(width)))
        for name in "qv":
            a, b = state.get(f"{src}attn.lora_A_{name}"), state.get(f"{src}attn.lora_B_{name}")
            if a is not None and b is not None:
                weights[name] = weights[name] + lora_scale * (b.float() @ a.float())
        dtype = state[src + "attn.qkv.weight"].dtype
        for name, hf in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj")):
            out[f"{dst}attention.{hf}.weight"] = weights[name].to(dtype)
        for name, bias in zip(("q_proj", "k_proj", "v_proj"), qkv_b.split(width)):
            out[f"{dst}attention.{name}.bias"] = bias
        renames = {"norm1": "norm1", "norm2": "norm2", "attn.proj": "attention.o_proj", "mlp.fc1": "mlp.fc1",
                   "mlp.fc2": "mlp.fc2"}
        for old, new in renames.items():
            out[f"{dst}{new}.weight"] = state[f"{src}{old}.weight"]
            out[f"{dst}{new}.bias"] = state[f"{src}{old}.bias"]
        out[f"{dst}layer_scale1.lambda1"] = state[src + "ls1.gamma"]
        out[f"{dst}layer_scale2.lambda1"] = state[src + "ls2.gamma"]
    return out


# ------------------------------------------------------------------------- LLM
def convert_llm(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], int]:
    """LLaMA (+ bare lora_A / lora_B) -> `LlamaForCausalLM` keys with peft's LoRA layout.

    Returns (state dict, LoRA target module names, LoRA rank)."""
    out, targets, ranks = {}, set(), set()
    lora_modules = {k[: -len(".lora_A")] for k in state if k.startswith("model.") and k.endswith(".lora_A")}
    for key, value in state.items():
        if key.startswith(VISION_PREFIX) or key.startswith("mm_projector."):
            continue
        if key.endswith("rotary_emb.inv_freq"):
            continue
        if not (key.startswith("model.") or key.startswith("lm_head.")):
            raise ConversionError(f"unexpected tensor {key!r} in a LocLLM checkpoint")
        if key.endswith(".lora_A") or key.endswith(".lora_B"):
            module, which = key.rsplit(".", 1)
            out[f"{module}.{which}.default.weight"] = value
            targets.add(module.rsplit(".", 1)[-1])
            if which == "lora_A":
                ranks.add(value.shape[0])
            continue
        module = key.rsplit(".", 1)[0]
        if module in lora_modules and key.endswith(".weight"):
            out[f"{module}.base_layer.weight"] = value
        else:
            out[key] = value
    if len(ranks) > 1:
        raise ConversionError(f"LLM LoRA ranks differ between layers: {sorted(ranks)}")
    return out, sorted(targets), (ranks.pop() if ranks else 0)


# ------------------------------------------------------------------------- checks
def check_locllm(state: dict[str, torch.Tensor], directory) -> None:
    """Raise ConversionError unless `state` looks like a LocLLM checkpoint."""
    required = [VISION_PREFIX + "pos_embed", VISION_PREFIX + "patch_embed.proj.weight",
                VISION_PREFIX + "blocks.0.attn.qkv.weight", "mm_projector.weight", "model.embed_tokens.weight",
                "lm_head.weight"]
    missing = [k for k in required if k not in state]
    if missing:
        raise ConversionError(f"{directory} is not a LocLLM checkpoint (DINOv2 vision_model + mm_projector + LLaMA): "
                              f"missing {', '.join(missing)}")


def _expect(state, key, shape) -> None:
    if key not in state:
        raise ConversionError(f"the checkpoint has no tensor {key!r}")
    if tuple(state[key].shape) != tuple(shape):
        raise ConversionError(f"tensor {key!r} has shape {tuple(state[key].shape)}, expected {tuple(shape)}")


def check_shapes(state: dict[str, torch.Tensor], text_config) -> None:
    """Every tensor LocLLM's architecture needs, with the shapes the vision width and the LLM config imply."""
    dims = vision_dims(state)
    w, p, h = dims["width"], dims["patch"], dims["mlp_hidden"]
    v = VISION_PREFIX
    _expect(state, v + "cls_token", (1, 1, w))
    _expect(state, v + "patch_embed.proj.weight", (w, 3, p, p))
    _expect(state, v + "patch_embed.proj.bias", (w,))
    for name in ("norm.weight", "norm.bias"):
        _expect(state, v + name, (w,))
    for i in range(dims["depth"]):
        b = f"{v}blocks.{i}."
        for name, shape in (("norm1.weight", (w,)), ("norm1.bias", (w,)), ("norm2.weight", (w,)), ("norm2.bias", (w,)),
                            ("attn.qkv.weight", (3 * w, w)), ("attn.qkv.bias", (3 * w,)), ("attn.proj.weight", (w, w)),
                            ("attn.proj.bias", (w,)), ("ls1.gamma", (w,)), ("ls2.gamma", (w,)),
                            ("mlp.fc1.weight", (h, w)), ("mlp.fc1.bias", (h,)), ("mlp.fc2.weight", (w, h)),
                            ("mlp.fc2.bias", (w,))):
            _expect(state, b + name, shape)
        for name in "qv":
            if b + f"attn.lora_A_{name}" in state:
                r = state[b + f"attn.lora_A_{name}"].shape[0]
                _expect(state, b + f"attn.lora_A_{name}", (r, w))
                _expect(state, b + f"attn.lora_B_{name}", (w, r))
    d, vocab = text_config.hidden_size, text_config.vocab_size
    _expect(state, "mm_projector.weight", (d, w))
    _expect(state, "mm_projector.bias", (d,))
    _expect(state, "model.embed_tokens.weight", (vocab, d))
    _expect(state, "lm_head.weight", (vocab, d))
    _expect(state, "model.norm.weight", (d,))
    heads = text_config.num_attention_heads
    kv = getattr(text_config, "num_key_value_heads", None) or heads
    head_dim = getattr(text_config, "head_dim", None) or d // heads
    inter = text_config.intermediate_size
    for i in range(text_config.num_hidden_layers):
        b = f"model.layers.{i}."
        for name, shape in (("self_attn.q_proj.weight", (heads * head_dim, d)), ("self_attn.k_proj.weight", (kv * head_dim, d)),
                            ("self_attn.v_proj.weight", (kv * head_dim, d)), ("self_attn.o_proj.weight", (d, heads * head_dim)),
                            ("mlp.gate_proj.weight", (inter, d)), ("mlp.up_proj.weight", (inter, d)),
                            ("mlp.down_proj.weight", (d, inter)), ("input_layernorm.weight", (d,)),
                            ("post_attention_layernorm.weight", (d,))):
            _expect(state, b + name, shape)
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            a = state.get(f"{b}self_attn.{proj}.lora_A")
            if a is not None:
                out_dim = state[f"{b}self_attn.{proj}.weight"].shape[0]
                _expect(state, f"{b}self_attn.{proj}.lora_A", (a.shape[0], d))
                _expect(state, f"{b}self_attn.{proj}.lora_B", (out_dim, a.shape[0]))
    extra_layers = {k for k in state if k.startswith(f"model.layers.{text_config.num_hidden_layers}.")}
    if extra_layers:
        raise ConversionError(f"the checkpoint has more LLM layers than the base LLM's {text_config.num_hidden_layers}")


@contextmanager
def _default_dtype(dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _locllm_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConversionError(f"{path} is not valid JSON: {err}") from None


def _legacy_flag(directory: Path, tokenizer) -> bool:
    """Whether LocLLM's slow tokenizer ran in `legacy` mode (transformers 4.31 defaulted to legacy when unset)."""
    for config_dir in (directory,):
        path = config_dir / "tokenizer_config.json"
        if path.is_file():
            value = json.loads(path.read_text()).get("legacy")
            if value is not None:
                return bool(value)
    value = getattr(tokenizer, "init_kwargs", {}).get("legacy")
    return True if value is None else bool(value)


# ------------------------------------------------------------------------- main entry
def convert_locllm(checkpoint, base_llm, source, out=None, dtype: torch.dtype | None = None,
                   legacy_tokenizer: bool | None = None, vision_heads: int | None = None):
    """Convert a LocLLM checkpoint folder; returns (model, processor) and saves them to `out` when given.

    Args:
        checkpoint: LocLLM's checkpoint folder (e.g. `coco/` of the hub repo `d0ntcare/LocLLM`).
        base_llm: the base LLM (Vicuna-7B v1.5) folder or hub id: its config and tokenizer.
        source: LocLLM's code folder (or its `datasets/constants.py`): the keypoint descriptions.
        dtype: one dtype for every converted weight; None (default): each part keeps its source precision
            (LocLLM: vision tower, projector and LoRA in float32, the LLM as stored, bfloat16: ~14 GB), recorded
            in the config's `float32_parts` so that loading in 16 bits keeps those parts in float32.
        legacy_tokenizer: override the tokenizer's `legacy` flag (default: from the checkpoint's tokenizer_config).
        vision_heads: ViT heads (default: width / 64, as in every DINOv2).
    """
    from transformers import AutoConfig, AutoTokenizer, Dinov2Config
    from transformers.initialization import no_init_weights

    from ..modeling.configuration import KptLLMConfig
    from ..modeling.model import KptLLMForKeypoints
    from ..processor import KptLLMProcessor, add_placeholder_tokens
    from ..protocols.protocol import SPECIAL_TOKENS

    directory = Path(checkpoint)
    names, descriptions = read_descriptions(source)  # cheap checks first
    state = read_state_dict(directory)
    check_locllm(state, directory)
    text_config = AutoConfig.from_pretrained(base_llm)
    if getattr(text_config, "model_type", None) != "llama":
        raise ConversionError(f"--base-llm {base_llm} is a {text_config.model_type} model, LocLLM needs a LLaMA (Vicuna)")
    check_shapes(state, text_config)
    locllm = _locllm_config(directory)
    crop = int(locllm.get("crop_size", CROP_SIZE))
    dims = vision_dims(state)
    if crop % dims["patch"]:
        raise ConversionError(f"crop size {crop} is not a multiple of the patch size {dims['patch']}")
    grid = crop // dims["patch"]
    vision_r = next((v.shape[0] for k, v in state.items() if k.endswith(("attn.lora_A_q", "attn.lora_A_v"))), 0)
    vision_alpha = float(locllm.get("lora_vision_alpha", 16))
    vision_scale = vision_alpha / vision_r if vision_r else 0.0
    llm_state, targets, llm_r = convert_llm(state)
    # the precision of each part in the source (only the frozen LLM is 16-bit in LocLLM's own checkpoints)
    parts = {"vision_model": [v for k, v in state.items() if k.startswith(VISION_PREFIX)],
             "projector": [state["mm_projector.weight"]],
             "lora_": [v for k, v in llm_state.items() if "lora_" in k]}
    float32_parts = [] if dtype is not None else \
        [name for name, tensors in parts.items() if tensors and all(t.dtype == torch.float32 for t in tensors)]
    llm_dtype = dtype or next(v.dtype for k, v in llm_state.items() if "lora_" not in k and v.is_floating_point())
    llm_alpha = locllm.get("lora_llm_alpha", 16)

    tokenizer = AutoTokenizer.from_pretrained(base_llm)
    legacy = _legacy_flag(directory, tokenizer) if legacy_tokenizer is None else legacy_tokenizer
    add_placeholder_tokens(tokenizer)
    heads = vision_heads or max(1, dims["width"] // 64)
    vision_config = Dinov2Config(hidden_size=dims["width"], num_hidden_layers=dims["depth"], num_attention_heads=heads,
                                 mlp_ratio=dims["mlp_hidden"] // dims["width"], patch_size=dims["patch"], image_size=crop,
                                 layer_norm_eps=1e-6, qkv_bias=True, layerscale_value=1.0, use_swiglu_ffn=False,
                                 hidden_act="gelu", drop_path_rate=0.0)
    config = KptLLMConfig(
        vision_config=vision_config, text_config=text_config, image_size=crop,
        image_mean=CLIP_MEAN, image_std=CLIP_STD, crop_padding=1.0, crop_fill="black", crop_interpolation="bilinear",
        protocol="locllm", protocol_options={"descriptions": descriptions, "keypoints": names, "legacy_tokenizer": legacy,
                                             "source": "LocLLM (kennethwdk/LocLLM), converted by kptllm convert locllm"},
        image_token_id=tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS[0]),
        kpt_token_id=tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS[1]),
        llm_tuning="lora" if targets else "frozen", vision_tuning="frozen",
        lora_r=llm_r or 8, lora_alpha=llm_alpha, lora_dropout=float(locllm.get("lora_llm_dropout", 0.05)),
        lora_target_modules=targets or ["q_proj", "v_proj"],
        prompt_pe_dim=8, prompt_extractor_layers=0, prompt_extractor_heads=1,  # unused: LocLLM has no visual prompts
        prompt_local_read=False, float32_parts=float32_parts,
    )
    with _default_dtype(llm_dtype), no_init_weights():
        model = KptLLMForKeypoints(config)
    with _default_dtype(llm_dtype):  # the unused prompt heads get an ordinary initialisation
        for head in (model.prompt_encoder, model.prompt_feature_extractor):
            for module in head.modules():
                model._init_weights(module)
    weights = {f"vision_model.{k}": v for k, v in convert_vision(state, grid, vision_scale).items()}
    weights.update({f"language_model.{k}": v for k, v in llm_state.items()})
    weights["projector.weight"], weights["projector.bias"] = state["mm_projector.weight"], state["mm_projector.bias"]
    del state
    expected = model.state_dict()
    for key, value in weights.items():
        if key not in expected:
            raise ConversionError(f"converted tensor {key!r} has no place in the model")
        if expected[key].shape != value.shape:
            raise ConversionError(f"converted tensor {key!r} has shape {tuple(value.shape)}, "
                                  f"the model expects {tuple(expected[key].shape)}")
    missing = [k for k in expected if k not in weights and not k.startswith(("prompt_encoder.", "prompt_feature_extractor."))]
    if missing:
        raise ConversionError(f"the checkpoint lacks {len(missing)} tensor(s) the model needs, e.g. {missing[:3]}")
    if dtype is not None:
        model.load_state_dict({k: v.to(dtype) for k, v in weights.items()}, strict=False)
    else:  # the float32 parts' parameters become float32; load_state_dict casts each tensor to its parameter
        for key, param in model.named_parameters():
            if any(name in key for name in float32_parts):
                param.data = param.data.float()
        model.load_state_dict(weights, strict=False)
    config.dtype = llm_dtype
    model.eval()
    processor = KptLLMProcessor(tokenizer, config)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        processor.save_pretrained(out)
    return model, processor


__all__ = ["ConversionError", "convert_locllm", "read_state_dict", "read_descriptions", "interpolate_position_table"]
