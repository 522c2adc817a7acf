"""`KptLLMForKeypoints`: the KptLLM++ model (paper Sec. 3, Fig. 2).

    query image   --visual encoder--> F_q --linear projector--> z_q   (N visual tokens, at `<image>`)
    support image --visual encoder--> F_s -------------------------+
    point on support --PE + MLP--> F_p --> CrossAttnLayers(F_p, F_s) --> z_p   (one token, at `<kpt>`)
    LLM([z_q, z_p, text]) --> "semantics [0.412, 0.305]"

Placeholder splicing follows transformers' LLaVA: `<image>` appears N times and `<kpt>` once per
prompt in `input_ids`; their embeddings are replaced by z_q and z_p before the LLM runs.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration import KptLLMConfig
from .prompt_encoder import PromptEncoder
from .prompt_feature_extractor import PromptFeatureExtractor



def _dtype_of(module: nn.Module) -> torch.dtype:
    """The floating dtype of a part's weights (parts may differ: see `KptLLMConfig.float32_parts`)."""
    return next(p.dtype for p in module.parameters() if p.is_floating_point())

class KptLLMForKeypoints(PreTrainedModel):
    config_class = KptLLMConfig
    config: KptLLMConfig
    base_model_prefix = "kptllm"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config: KptLLMConfig, vision_model: nn.Module | None = None, language_model: nn.Module | None = None):
        """Build from `config`; pass `vision_model` / `language_model` to use already loaded (pretrained) parts."""
        super().__init__(config)
        for part in (vision_model, language_model):
            # Building the composite config resets the shared sub-configs' attention choice: restore the default.
            if part is not None and part.config._attn_implementation is None:
                part.set_attn_implementation(part.get_correct_attn_implementation(None))
        self.vision_model = vision_model if vision_model is not None else AutoModel.from_config(config.vision_config)
        self.language_model = (
            language_model if language_model is not None else AutoModelForCausalLM.from_config(config.text_config)
        )
        vision_dim, llm_dim = config.vision_hidden_size, config.text_config.hidden_size
        self.projector = nn.Linear(vision_dim, llm_dim)
        self.prompt_encoder = PromptEncoder(config.prompt_pe_dim, vision_dim)
        self.prompt_feature_extractor = PromptFeatureExtractor(
            vision_dim, llm_dim, config.prompt_pe_dim, config.patch_grid,
            config.prompt_extractor_layers, config.prompt_extractor_heads, local_read=config.prompt_local_read,
            pixel_read=config.prompt_pixel_read,
        )
        self.post_init()
        # Parts whose source precision was float32 stay float32 when loaded in 16 bits (transformers' strict
        # keep-in-fp32 plan, read from the instance at load time); the encoders cast where parts meet.
        self._keep_in_fp32_modules_strict = set(self._keep_in_fp32_modules_strict or ()) | set(config.float32_parts)
        # After post_init: its weight init must not touch the LoRA matrices (B starts at zero).
        self._add_lora_adapters()
        self.apply_tuning_policy()

    # ----------------------------------------------------------------- parameters
    def _init_weights(self, module: nn.Module) -> None:
        # Layers added to an architecture start at zero (the prompt extractor's local read): loading a
        # checkpoint saved before they existed must give that checkpoint's outputs, not N(0, 0.02) noise.
        if getattr(module, "kptllm_zero_init", False):
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)
            return
        super()._init_weights(module)

    def _add_lora_adapters(self) -> None:
        cfg = self.config
        if cfg.llm_tuning == "lora":
            inject_adapter_in_model(
                LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                           target_modules=list(cfg.lora_target_modules)),
                self.language_model,
            )
        if cfg.vision_tuning == "lora":
            inject_adapter_in_model(
                LoraConfig(r=cfg.vision_lora_r, lora_alpha=cfg.vision_lora_alpha, lora_dropout=cfg.lora_dropout,
                           target_modules=list(cfg.vision_lora_target_modules)),
                self.vision_model,
            )

    def apply_tuning_policy(self) -> None:
        """Set `requires_grad`: LoRA / full / frozen for the two backbones; the KptLLM++ heads always train."""
        for backbone, tuning in ((self.language_model, self.config.llm_tuning), (self.vision_model, self.config.vision_tuning)):
            for name, param in backbone.named_parameters():
                param.requires_grad = tuning == "full" or (tuning == "lora" and "lora_" in name)
        for head in (self.projector, self.prompt_encoder, self.prompt_feature_extractor):
            head.requires_grad_(True)

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    # ----------------------------------------------------------------- encoders
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Patch tokens of the visual encoder. `pixel_values [B, 3, S, S]` -> `[B, N, Dv]` (row-major grid).

        CLS / register tokens are dropped; ConvNeXt-style feature maps `[B, C, h, w]` are flattened.
        """
        pixel_values = pixel_values.to(dtype=_dtype_of(self.vision_model))
        layer = self.config.vision_feature_layer
        outputs = self.vision_model(pixel_values=pixel_values, output_hidden_states=layer != -1)
        features = outputs.last_hidden_state if layer == -1 else outputs.hidden_states[layer]
        if features.dim() == 4:  # [B, C, h, w] -> [B, h*w, C]
            features = features.flatten(2).transpose(1, 2)
        num_patches = self.config.num_image_tokens
        if features.shape[1] < num_patches:
            raise ValueError(f"the visual encoder gave {features.shape[1]} tokens, expected at least {num_patches}")
        return features[:, features.shape[1] - num_patches:]

    def project_image(self, image_features: torch.Tensor) -> torch.Tensor:
        """z_q = Linear(F_q): `[B, N, Dv]` -> `[B, N, D_llm]`."""
        return self.projector(image_features.to(self.projector.weight.dtype))

    def encode_prompts(self, support_features: torch.Tensor, points: torch.Tensor, support_ids: torch.Tensor,
                       slot_ids: torch.Tensor, num_slots: int, support_pixels: torch.Tensor | None = None) -> torch.Tensor:
        """Keypoint prompt tokens z_p, one per `<kpt>` slot.

        Args:
            support_features: `[M, N, Dv]` patch tokens of the M support images.
            points: `[P, 2]` prompt points, (x, y) normalised to their support crop.
            support_ids: `[P]` which support image each point is on.
            slot_ids: `[P]` which `<kpt>` slot (row-major over the batch) each point feeds; a slot fed by
                several points (K-shot) gets the mean of their features.
            num_slots: number of `<kpt>` slots T.
            support_pixels: `[M, 3, S, S]` the support crops (read only with `config.prompt_pixel_read`).
        Returns: `[T, D_llm]`.
        """
        support_features = support_features.to(_dtype_of(self.prompt_feature_extractor))
        features = self.prompt_feature_extractor(self.prompt_encoder(points), support_features, support_ids, points,
                                                 support_pixels)
        summed = features.new_zeros(num_slots, features.shape[-1]).index_add(0, slot_ids, features)
        counts = torch.bincount(slot_ids, minlength=num_slots)
        if len(counts) != num_slots or bool((counts == 0).any()):
            raise ValueError(f"each of the {num_slots} <kpt> slots needs at least one prompt point")
        return summed / counts.to(features.dtype)[:, None]

    # ----------------------------------------------------------------- splicing
    def embed_inputs(self, input_ids: torch.Tensor, image_tokens: torch.Tensor | None = None,
                     kpt_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with placeholders replaced.

        `input_ids [B, L]`; `image_tokens [B', N, D]` for the B' rows that contain `<image>` (each exactly
        N times, in order); `kpt_tokens [T, D]` for the T `<kpt>` positions in row-major order.
        """
        # Placeholder ids may lie outside the embedding table (converted checkpoints): look up id 0 there instead.
        placeholders = torch.zeros_like(input_ids, dtype=torch.bool)
        for token_id in (self.config.image_token_id, self.config.kpt_token_id):
            if token_id is not None:
                placeholders |= input_ids == token_id
        embeds = self.get_input_embeddings()(input_ids.masked_fill(placeholders, 0))
        for token_id, features, what in ((self.config.image_token_id, image_tokens, "image"),
                                         (self.config.kpt_token_id, kpt_tokens, "kpt")):
            mask = input_ids == token_id
            count = int(mask.sum())
            given = 0 if features is None else features.shape[0] * (features.shape[1] if features.dim() == 3 else 1)
            if count != given:
                raise ValueError(f"{count} <{what}> placeholders in input_ids but {given} {what} feature tokens")
            if count:
                embeds = embeds.masked_scatter(mask[..., None], features.reshape(-1, embeds.shape[-1]).to(embeds.dtype))
        return embeds

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        support_pixel_values: torch.Tensor | None = None,
        kpt_points: torch.Tensor | None = None,
        kpt_support_ids: torch.Tensor | None = None,
        kpt_slot_ids: torch.Tensor | None = None,
        image_index: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        shared_prefix_length: int | None = None,
        length_buckets: int = 1,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Language-model forward with multimodal splicing; `labels` (-100 outside the answers) give the loss of Eq. 8.

        Args:
            input_ids: `[B, L]` with `<image>` x N in rows that have a query image and one `<kpt>` per prompt.
            pixel_values: `[B', 3, S, S]` query crops, one per row containing `<image>`; or, with
                `image_index [B']`, the distinct crops `[U, 3, S, S]` and which one each such row shows.
            support_pixel_values: `[M, 3, S, S]` support crops (for task (a) pass the query crop again).
            kpt_points, kpt_support_ids, kpt_slot_ids: see `encode_prompts`; slot ids default to one point per slot.
            shared_prefix_length: training only (with `labels` and `image_index`): the first Lp tokens (BOS, system
                prompt, image tokens) are the same for all rows of an image; run them once per image and let
                the rows attend to that KV (`_shared_prefix_loss`). Same loss and gradients, ~Lp/L fewer LM tokens.
            length_buckets: with `shared_prefix_length`, run the rows in this many groups of similar length, each
                padded to its own longest row only (same loss; ~30 % fewer LM tokens at 4 on KeypointWorld batches).
        """
        first = None
        if shared_prefix_length is not None:
            if labels is None or image_index is None:
                raise ValueError("shared_prefix_length needs labels and image_index (a training batch)")
            first = self._prefix_rows(input_ids, attention_mask, labels, image_index, shared_prefix_length)
        prefix_embeds = suffix_embeds = None
        if inputs_embeds is None:
            image_tokens = None if pixel_values is None else self.project_image(self.encode_images(pixel_values))
            kpt_tokens = None
            if kpt_points is not None:
                if support_pixel_values is None or kpt_support_ids is None:
                    raise ValueError("kpt_points need support_pixel_values and kpt_support_ids")
                num_slots = int((input_ids == self.config.kpt_token_id).sum())
                slot_ids = kpt_slot_ids if kpt_slot_ids is not None else torch.arange(len(kpt_points), device=input_ids.device)
                kpt_tokens = self.encode_prompts(self.encode_images(support_pixel_values), kpt_points,
                                                 kpt_support_ids, slot_ids, num_slots, support_pixel_values)
            if first is not None:  # each image's tokens spliced into its one prefix, not into every row's copy
                length = shared_prefix_length
                prefix_embeds = self.embed_inputs(input_ids[first, :length],
                                                  None if image_tokens is None else image_tokens[:first.shape[0]])
                suffix_embeds = self.embed_inputs(input_ids[:, length:], None, kpt_tokens)
            else:
                if image_tokens is not None and image_index is not None:
                    image_tokens = image_tokens[image_index]
                inputs_embeds = self.embed_inputs(input_ids, image_tokens, kpt_tokens)
        if first is not None:
            if inputs_embeds is not None:
                prefix_embeds, suffix_embeds = inputs_embeds[first, :shared_prefix_length], inputs_embeds[:, shared_prefix_length:]
            return CausalLMOutputWithPast(loss=self._shared_prefix_loss(
                prefix_embeds, suffix_embeds, attention_mask, labels, image_index, shared_prefix_length, length_buckets))
        return self.language_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
            cache=cache, labels=labels, use_cache=use_cache, logits_to_keep=logits_to_keep,
            **kwargs,
        )

    def _prefix_rows(self, input_ids, attention_mask, labels, image_index, prefix_length: int) -> torch.Tensor:
        """`[U]`: the first row of each image, after checking that the rows of an image share their first
        `prefix_length` tokens, unpadded and unlabelled (what `shared_prefix_length` assumes)."""
        from .shared_prefix import decoder_parts

        rows = input_ids.shape[0]
        if image_index.shape[0] != rows:
            raise ValueError("shared_prefix_length: every row needs a query image (image_index has one entry per row)")
        count = int(image_index.max()) + 1
        first = torch.full((count,), rows, device=input_ids.device).scatter_reduce(
            0, image_index, torch.arange(rows, device=input_ids.device), "amin")
        if bool((first == rows).any()):
            raise ValueError("shared_prefix_length: an image without rows (image_index must use 0..U-1)")
        if decoder_parts(self.language_model) is None \
                or not bool((input_ids[:, :prefix_length] == input_ids[first[image_index], :prefix_length]).all()) \
                or (attention_mask is not None and not bool(attention_mask[:, :prefix_length].all())):
            raise ValueError("shared_prefix_length: rows of an image must share their first tokens (a Llama-style LM)")
        # the prefix predicts no labelled token (answers come after the query), so only the rows' part counts
        if bool((labels[:, :prefix_length + 1] != -100).any()):
            raise ValueError("shared_prefix_length: labels inside the shared prefix")
        return first

    def _shared_prefix_loss(self, prefix_embeds, suffix, attention_mask, labels, image_index, prefix_length: int,
                            length_buckets: int = 1):
        """The causal-LM loss of `[B, L]` rows whose first `prefix_length` tokens are those of their image.

        `prefix_embeds [U, Lp, D]` (one per image, `_prefix_rows`), `suffix [B, L - Lp, D]` (each row's
        rest). Each image's prefix runs through the LM once (with gradients); the rows' tokens attend to
        their image's prefix KV and to their own tokens (the inference engine's shared-prefix attention).
        Causal attention never lets a prefix token see a row token, so every hidden state, the loss and
        the gradients equal the plain forward's (up to rounding). Rows run in `length_buckets` groups
        sorted by length, each `[b, W_group, D]` (padding costs nothing beyond a group's longest row);
        logits are computed only where a label is, and the loss is the mean over all labelled tokens.
        """
        from .shared_prefix import ATTENTION_NAME, PrefixKV, Rows, decoder_hidden, decoder_parts, fill_cache, use_attention

        lm = self.language_model
        base = decoder_parts(lm)
        rows, device = suffix.shape[0], suffix.device
        prefix = PrefixKV.from_cache(fill_cache(lm, prefix_embeds))
        valid = torch.ones(suffix.shape[:2], dtype=torch.bool, device=device) if attention_mask is None \
            else attention_mask[:, prefix_length:].bool()
        # suffix position t predicts token prefix_length + 1 + t; the last position predicts nothing
        targets = torch.nn.functional.pad(labels[:, prefix_length + 1:], (0, 1), value=-100)
        columns = torch.arange(suffix.shape[1], device=device)
        # a row needs its columns up to its last labelled prediction (causal: later ones change nothing before)
        used = torch.where(targets != -100, columns + 1, 0).amax(1)
        total = suffix.new_zeros((), dtype=torch.float32)
        with use_attention(lm, ATTENTION_NAME):
            for group in torch.tensor_split(torch.argsort(used, stable=True), max(1, min(length_buckets, rows))):
                if group.numel() == 0:
                    continue
                width = max(int(used[group].max()), 1)
                causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
                mask = valid[group, None, None, :width] & causal[None, None]
                positions = (prefix_length + columns[:width])[None].expand(group.numel(), -1)
                hidden = decoder_hidden(base, suffix[group, :width], mask, positions,
                                        Rows(prefix, image_index[group], width))
                wanted = targets[group, :width]
                keep = wanted != -100
                logits = lm.lm_head(base.norm(hidden[keep]))
                total = total + torch.nn.functional.cross_entropy(logits.float(), wanted[keep], reduction="sum")
        return total / (targets != -100).sum()


# Lets AutoConfig / AutoModel (and AutoTokenizer, which reads the config) resolve saved checkpoints.
AutoConfig.register(KptLLMConfig.model_type, KptLLMConfig, exist_ok=True)
AutoModel.register(KptLLMConfig, KptLLMForKeypoints, exist_ok=True)

__all__ = ["KptLLMForKeypoints"]
