"""Inference-time model preparation: merging LoRA adapters, 8-/4-bit loading.

`merge_lora(model)` folds every LoRA adapter into its base weight (W <- W + s B A) and puts the plain
layer back, so each projection is one matmul instead of three (the adapters were half of a decoding
step of the tiny model on a CPU). It modifies the model in place: only for a model that is no longer
trained. In float32 the merged model's outputs equal the adapter model's up to rounding.

`load_quantized(path, bits=8 | 4)` loads a saved model with its LLM in 8-/4-bit through bitsandbytes
(needs `pip install bitsandbytes` and a CUDA GPU): the 7B LLM then fits a 24 GB card with room for a
large decoding batch (docs/BENCHMARKS.md, memory).
"""

from __future__ import annotations

import importlib.util

from torch import nn


def merge_lora(model: nn.Module) -> int:
    """Merge all LoRA adapters of `model` into their base layers, in place; returns how many were merged."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover - peft is a dependency
        return 0
    merged = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer) and hasattr(module, "base_layer"):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
            merged += 1
    return merged


def quantization_config(bits: int | None):
    """A `BitsAndBytesConfig` for 8- or 4-bit (NF4, bf16 compute) loading; None for `bits=None`."""
    if bits is None:
        return None
    if bits not in (4, 8):
        raise ValueError(f"quantization must be 4 or 8 bits, got {bits}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError(f"{bits}-bit loading needs bitsandbytes: pip install bitsandbytes (CUDA GPU)")
    import torch
    from transformers import BitsAndBytesConfig

    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=["lm_head", "vision_model", "projector",
                                                                            "prompt_encoder", "prompt_feature_extractor"])
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
                              bnb_4bit_use_double_quant=True,
                              llm_int8_skip_modules=["lm_head", "vision_model", "projector", "prompt_encoder",
                                                     "prompt_feature_extractor"])


def load_quantized(path_or_id, bits: int = 8, device="cuda", dtype=None, **kwargs):
    """A `KeypointPredictor` whose LLM is loaded in `bits` (8 or 4) bits; the vision encoder and heads stay in `dtype`."""
    import torch

    from .modeling import KptLLMForKeypoints
    from .predictor import KeypointPredictor
    from .processor import KptLLMProcessor

    config = quantization_config(bits)
    dtype = dtype or torch.bfloat16
    model = KptLLMForKeypoints.from_pretrained(path_or_id, dtype=dtype, device_map={"": torch.device(device)},
                                               quantization_config=config)
    return KeypointPredictor(model, KptLLMProcessor.from_pretrained(path_or_id, config=model.config), **kwargs)
