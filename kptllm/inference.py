"""Inference-time model preparation: merging LoRA adapters, 8-/4-bit loading.

`merge_lora(model)` (from `kptllm.modeling.lora`, kept importable here) folds every LoRA adapter into its base weight.

`load_quantized(path, bits=8 | 4)` loads a saved model with its LLM in 8-/4-bit through bitsandbytes
(needs `pip install bitsandbytes` and a CUDA GPU): the 7B LLM then fits a 24 GB card with room for a
large decoding batch (docs/BENCHMARKS.md, memory).
"""

from __future__ import annotations

import importlib.util

from .modeling.lora import merge_lora

__all__ = ["load_quantized", "merge_lora", "quantization_config"]


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

    from .modeling.model import KptLLMForKeypoints
    from .predictor import KeypointPredictor
    from .processor import KptLLMProcessor

    config = quantization_config(bits)
    dtype = dtype or torch.bfloat16
    model = KptLLMForKeypoints.from_pretrained(path_or_id, dtype=dtype, device_map={"": torch.device(device)},
                                               quantization_config=config)
    return KeypointPredictor(model, KptLLMProcessor.from_pretrained(path_or_id, config=model.config), **kwargs)
