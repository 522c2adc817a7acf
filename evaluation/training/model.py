"""Building the model a training config asks for: from scratch, from pretrained parts, or from a checkpoint.

    model:
      type: scratch            # small model from configs + a tokenizer trained in-process (the embedded model)
      vision: {model_type: dinov2, hidden_size: 192, ...}     # any AutoConfig model_type + fields
      llm: {model_type: llama, hidden_size: 256, ...}
      tokenizer_vocab: 800
      kptllm: {image_size: 96, llm_tuning: full, vision_tuning: full, ...}   # KptLLMConfig fields
    model: {type: pretrained, vision: facebook/dinov2-large, llm: lmsys/vicuna-7b-v1.5, kptllm: {...}}
    model: {type: checkpoint, path: runs/kw/final}              # continue from one of ours

`meta=True` builds the same architecture on the meta device (no memory, no download for `scratch`;
`pretrained` then needs only the configs, given inline as `vision_config` / `llm_config`).
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from kptllm.build import build_from_parts, train_tiny_tokenizer
from kptllm.modeling.configuration import KptLLMConfig
from kptllm.modeling.model import KptLLMForKeypoints
from kptllm.processor import KptLLMProcessor
from kptllm.protocols.protocol import SPECIAL_TOKENS


def _config(spec: dict, **extra):
    spec = dict(spec)
    model_type = spec.pop("model_type")
    return AutoConfig.for_model(model_type, **spec, **extra)


# the keys `build_model` reads for each model type, with their types
MODEL_KEYS = {"checkpoint": {"path": str}, "scratch": {"vision": dict, "llm": dict},
              "pretrained": {"vision": str, "llm": str}}


def check_model_spec(spec) -> None:
    """ValueError naming what a `model:` config section lacks, before anything is built."""
    if not isinstance(spec, dict):
        raise ValueError(f"the 'model' section must be a mapping with a 'type' ({', '.join(MODEL_KEYS)})")
    kind = spec.get("type", "scratch")
    if kind not in MODEL_KEYS:
        raise ValueError(f"unknown model type {kind!r} (use {', '.join(MODEL_KEYS)})")
    for key, kind_of in MODEL_KEYS[kind].items():
        if not isinstance(spec.get(key), kind_of):
            raise ValueError(f"a {kind} model needs model.{key} ({'a mapping' if kind_of is dict else 'a path or hub id'})")
        if kind_of is dict and "model_type" not in spec[key]:
            raise ValueError(f"model.{key} needs a model_type (e.g. dinov2, llama)")
    if not isinstance(spec.get("kptllm", {}), dict):
        raise ValueError("model.kptllm must be a mapping")


def build_model(spec: dict, tokenizer_text=(), meta: bool = False):
    """(model, processor) for a `model:` config section; processor is None for meta builds without a tokenizer."""
    check_model_spec(spec)
    kind = spec.get("type", "scratch")
    kptllm_kwargs = dict(spec.get("kptllm", {}))
    if kind == "checkpoint":
        # float32 master weights, also from the float16 export in assets/ (Adam on float16 weights stalls)
        # model.kptllm: config fields to change, e.g. {prompt_pixel_read: 7} adds that (zero-initialised) read
        model = KptLLMForKeypoints.from_pretrained(spec["path"], dtype=torch.float32, **kptllm_kwargs)
        model.apply_tuning_policy()
        return model, KptLLMProcessor.from_pretrained(spec["path"], config=model.config)
    if kind == "scratch":
        tokenizer = train_tiny_tokenizer(vocab_size=int(spec.get("tokenizer_vocab", 800)), extra_text=tokenizer_text)
        vision_config = _config(spec["vision"])
        text_config = _config(spec["llm"], vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        config = KptLLMConfig(vision_config=vision_config, text_config=text_config,
                              image_token_id=tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS[0]),
                              kpt_token_id=tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS[1]), **kptllm_kwargs)
        torch.manual_seed(int(spec.get("seed", 0)))
        with torch.device("meta") if meta else torch.device("cpu"):
            model = KptLLMForKeypoints(config)
        return model, KptLLMProcessor(tokenizer, config)
    if kind == "pretrained":
        if meta:  # architecture only, from inline configs: nothing is downloaded
            vision_config = _config(spec["vision_config"])
            text_config = _config(spec["llm_config"])
            vocab = text_config.vocab_size
            config = KptLLMConfig(vision_config=vision_config, text_config=text_config, image_token_id=vocab,
                                  kpt_token_id=vocab + 1, **kptllm_kwargs)
            with torch.device("meta"):
                vision = AutoModel.from_config(vision_config)
                if getattr(vision_config, "model_type", "") == "clip":
                    vision = AutoModel.from_config(vision_config.vision_config)
                llm = AutoModelForCausalLM.from_config(text_config)
                llm.resize_token_embeddings(vocab + 2, mean_resizing=False)
                model = KptLLMForKeypoints(config, vision_model=vision, language_model=llm)
            return model, None
        return build_from_parts(spec["vision"], spec["llm"], **kptllm_kwargs)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
