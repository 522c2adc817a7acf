"""`KptLLMConfig`: one composite config for the whole model (vision backbone + LLM + KptLLM++ heads).

The vision and text sub-configs are ordinary Hugging Face configs (any `AutoModel` vision backbone,
any `AutoModelForCausalLM`), so a checkpoint saved with `save_pretrained` carries everything needed to
rebuild the model offline.
"""

from __future__ import annotations

from typing import Literal

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Default LoRA targets per backbone family; anything else must be given explicitly.
_LLM_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_VISION_LORA_TARGETS = {
    "dinov2": ["q_proj", "v_proj"],
    "dinov2_with_registers": ["q_proj", "v_proj"],
    "clip_vision_model": ["q_proj", "v_proj"],
    "siglip_vision_model": ["q_proj", "v_proj"],
    "convnext": ["pwconv1", "pwconv2"],
    "convnextv2": ["pwconv1", "pwconv2"],
}

Tuning = Literal["lora", "full", "frozen"]


def patch_grid_for(vision_config: PreTrainedConfig, image_size: int) -> tuple[int, int]:
    """Spatial size (h, w) of the feature map the backbone gives for a square `image_size` input."""
    if hasattr(vision_config, "hidden_sizes"):  # ConvNeXt family: stem /4, then /2 per later stage
        stride = 4 * 2 ** (len(vision_config.hidden_sizes) - 1)
        return -(-image_size // stride), -(-image_size // stride)
    patch = getattr(vision_config, "patch_size", None)
    if isinstance(patch, (list, tuple)):
        patch = patch[0]
    if patch:  # ViT family: one token per patch
        if image_size % patch:
            raise ValueError(f"image_size {image_size} is not a multiple of the patch size {patch}")
        return image_size // patch, image_size // patch
    raise ValueError(f"cannot tell the feature grid of a {vision_config.model_type} backbone")


def vision_width(vision_config: PreTrainedConfig) -> int:
    """Channel width of the backbone's output tokens."""
    if hasattr(vision_config, "hidden_sizes"):
        return vision_config.hidden_sizes[-1]
    return vision_config.hidden_size


class KptLLMConfig(PreTrainedConfig):
    r"""Configuration of [`KptLLMForKeypoints`].

    Args:
        vision_config: config of the visual encoder (built with `AutoModel.from_config`).
        text_config: config of the LLM (built with `AutoModelForCausalLM.from_config`).
        image_size: side of the square model input crop, in pixels (224 for KptLLM++).
        image_mean, image_std: per-channel normalisation of the crop (RGB, values in [0, 1]).
        crop_padding: the square crop's side is `crop_padding * max(w, h)` of the object box.
        vision_feature_layer: which hidden state of the backbone gives the patch tokens (-1: the final output).
        prompt_pe_dim: width of the sine-cosine positional encoding of points (multiple of 4).
        prompt_extractor_layers, prompt_extractor_heads: the cross-attention prompt feature extractor.
        prompt_local_read: add to each prompt's cross-attention query a learned read of the support features
            sampled under the point (ours, beside the paper's Eq. 2; `kptllm.modeling.prompt_feature_extractor`).
            On by default; the paper configs turn it off to reproduce the paper as written.
        prompt_pixel_read: side in crop pixels of a window of the support crop's own pixels, centred on the
            point, added to the query through a zero-initialised linear layer (ours; 0 = off, the default).
        image_token_id, kpt_token_id: placeholder token ids (set from the tokenizer).
        llm_tuning, vision_tuning: "lora", "full" or "frozen" (KptLLM++: LoRA on both).
        lora_r, lora_alpha, lora_dropout, lora_target_modules: LoRA on the LLM (paper: r=128, alpha=256).
        vision_lora_r, vision_lora_alpha, vision_lora_target_modules: LoRA on the visual encoder (ours:
            r=16, alpha=32; the paper's r=128, alpha=256 is stated for the LLM, with no separate encoder value).
        protocol, protocol_options: the text protocol the checkpoint speaks (`kptllm.protocols.checkpoints`): "kptllm"
            (KptLLM++ identify-then-detect, the default) or "locllm" (converted LocLLM checkpoints).
        crop_fill: colour outside the image in the crop: "mean" (the normalisation mean) or "black".
        crop_interpolation: resampling of the crop: "bicubic" or "bilinear".
        float32_parts: parameter-name parts (e.g. "vision_model", "projector", "lora_") kept in float32 when the
            model is loaded in 16 bits: the precision those parts had in their source (a converted LocLLM runs
            its vision tower, projector and LoRA in float32, its LLM in bfloat16). Empty: one dtype for all.
    """

    model_type = "kptllm"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="dinov2"),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_size: int = 224
    image_mean: list[float] | tuple[float, ...] = IMAGENET_MEAN
    image_std: list[float] | tuple[float, ...] = IMAGENET_STD
    crop_padding: float = 1.25
    vision_feature_layer: int = -1
    prompt_pe_dim: int = 256
    prompt_extractor_layers: int = 2
    prompt_extractor_heads: int = 8
    prompt_local_read: bool = True
    prompt_pixel_read: int = 0
    image_token_id: int | None = None
    kpt_token_id: int | None = None
    llm_tuning: str = "lora"
    vision_tuning: str = "lora"
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = None
    vision_lora_r: int = 16
    vision_lora_alpha: int = 32
    vision_lora_target_modules: list[str] | None = None
    protocol: str = "kptllm"
    protocol_options: dict | None = None
    crop_fill: str = "mean"
    crop_interpolation: str = "bicubic"
    float32_parts: list[str] | None = None
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        for name in ("llm_tuning", "vision_tuning"):
            if getattr(self, name) not in ("lora", "full", "frozen"):
                raise ValueError(f"{name} must be 'lora', 'full' or 'frozen', got {getattr(self, name)!r}")
        if isinstance(self.prompt_pixel_read, bool) or not isinstance(self.prompt_pixel_read, int) \
                or not 0 <= self.prompt_pixel_read <= 32:
            raise ValueError(f"prompt_pixel_read must be a window side of 0 (off) to 32 pixels, got {self.prompt_pixel_read!r}")
        if self.prompt_pe_dim % 4 or self.prompt_pe_dim < 8:
            raise ValueError("prompt_pe_dim must be a multiple of 4 and at least 8")
        if vision_width(self.vision_config) % self.prompt_extractor_heads:
            raise ValueError("the vision width must be divisible by prompt_extractor_heads")
        if self.crop_fill not in ("mean", "black"):
            raise ValueError(f"crop_fill must be 'mean' or 'black', got {self.crop_fill!r}")
        if self.crop_interpolation not in ("bicubic", "bilinear"):
            raise ValueError(f"crop_interpolation must be 'bicubic' or 'bilinear', got {self.crop_interpolation!r}")
        if not self.crop_padding >= 1.0:
            raise ValueError("crop_padding must be >= 1")
        self.float32_parts = [str(p) for p in self.float32_parts or []]
        self.image_mean = [float(v) for v in self.image_mean]
        self.image_std = [float(v) for v in self.image_std]
        if self.lora_target_modules is None:
            self.lora_target_modules = list(_LLM_LORA_TARGETS)
        if self.vision_lora_target_modules is None:
            targets = _VISION_LORA_TARGETS.get(self.vision_config.model_type)
            if targets is None and self.vision_tuning == "lora":
                raise ValueError(
                    f"no default LoRA targets for a {self.vision_config.model_type} backbone: "
                    "set vision_lora_target_modules"
                )
            self.vision_lora_target_modules = list(targets or [])

    @property
    def patch_grid(self) -> tuple[int, int]:
        """(h, w) of the visual token grid."""
        return patch_grid_for(self.vision_config, self.image_size)

    @property
    def num_image_tokens(self) -> int:
        h, w = self.patch_grid
        return h * w

    @property
    def vision_hidden_size(self) -> int:
        return vision_width(self.vision_config)


__all__ = ["KptLLMConfig"]
