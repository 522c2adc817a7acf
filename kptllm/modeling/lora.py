"""Folding LoRA adapters into their weights for inference.

`merge_lora(model)` folds every LoRA adapter into its base weight (W <- W + s B A) and puts the plain
layer back, so each projection is one matmul instead of three (the adapters were half of a decoding
step of the tiny model on a CPU). It modifies the model in place: only for a model that is no longer
trained. In float32 the merged model's outputs equal the adapter model's up to rounding.

Adapters kept at a wider precision than their base weight (a converted LocLLM: float32 LoRA on a bfloat16
LLM, `KptLLMConfig.float32_parts`) are not merged: folding them in would round them to the base's 16 bits.
"""

from __future__ import annotations

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
            base = module.get_base_layer().weight
            adapters = [p for n, p in module.named_parameters() if "lora_" in n]
            if base.is_floating_point() and any(p.element_size() > base.element_size() for p in adapters):
                continue  # a wider adapter stays an adapter (its precision is the point)
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
            merged += 1
    return merged
