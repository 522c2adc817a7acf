"""Loading for inference folds the LoRA adapters into the weights without changing what the model says."""

import torch

from kptllm import KeypointPredictor
from kptllm.build import build_tiny


def _lora_layers(model) -> int:
    from peft.tuners.lora import LoraLayer

    return sum(isinstance(m, LoraLayer) for m in model.modules())


def test_from_pretrained_merges_lora_by_default_with_the_same_outputs(tmp_path, coco_person):
    model, processor = build_tiny(seed=7)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # trained-looking adapters: peft starts B at zero, which would make merging a no-op
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)

    merged = KeypointPredictor.from_pretrained(tmp_path, device="cpu")
    kept = KeypointPredictor.from_pretrained(tmp_path, device="cpu", merge_lora=False)
    assert _lora_layers(kept.model) > 0 and _lora_layers(merged.model) == 0

    embeds = torch.randn(2, 9, model.config.text_config.hidden_size, generator=generator)
    pixels = torch.randn(1, 3, model.config.image_size, model.config.image_size, generator=generator)
    with torch.no_grad():
        a = merged.model.language_model(inputs_embeds=embeds).logits
        b = kept.model.language_model(inputs_embeds=embeds).logits
        for name, param in model.named_parameters():  # the adapters matter: without them the logits move
            if "lora_B" in name:
                param.zero_()
        assert (a - model.language_model(inputs_embeds=embeds).logits).abs().max() > 1e-2
        assert torch.allclose(a, b, atol=1e-4)
        assert torch.allclose(merged.model.encode_images(pixels), kept.model.encode_images(pixels), atol=1e-4)
    names = ["nose", "left shoulder", "right knee"]
    for predictor in (merged, kept):
        predictor.set_image(coco_person.image, coco_person.bbox)
    assert [r.raw for r in merged.detect(names)] == [r.raw for r in kept.detect(names)]
