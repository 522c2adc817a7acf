"""Building a KptLLM++ model from pretrained parts (hub ids or local folders) and tiny random models.

    model, processor = build_from_parts(vision="facebook/dinov2-large", llm="lmsys/vicuna-7b-v1.5")
    model, processor = build_tiny(seed=0)          # offline, for tests and smoke runs
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (AutoConfig, AutoImageProcessor, AutoModel, AutoModelForCausalLM, AutoTokenizer,
                          Dinov2Config, LlamaConfig, PreTrainedTokenizerFast)

from .modeling.configuration import IMAGENET_MEAN, IMAGENET_STD, KptLLMConfig
from .modeling.model import KptLLMForKeypoints
from .processor import KptLLMProcessor, add_placeholder_tokens
from .protocols.protocol import ASSISTANT, SPECIAL_TOKENS, SYSTEM, Task, build_conversation


def _load_vision(vision: str, **kwargs):
    """A vision backbone; for composite image-text checkpoints (CLIP, SigLIP) only the vision tower."""
    config = AutoConfig.from_pretrained(vision, **kwargs)
    if getattr(config, "vision_config", None) is None:
        return AutoModel.from_pretrained(vision, **kwargs)
    full = AutoModel.from_pretrained(vision, **kwargs)
    tower = AutoModel.from_config(config.vision_config)
    tower.vision_model.load_state_dict(full.vision_model.state_dict())
    return tower


def _image_stats(vision: str) -> tuple[list[float], list[float]]:
    try:
        image_processor = AutoImageProcessor.from_pretrained(vision)
        return list(image_processor.image_mean), list(image_processor.image_std)
    except (OSError, ValueError, AttributeError, TypeError):
        return list(IMAGENET_MEAN), list(IMAGENET_STD)


def build_from_parts(vision: str, llm: str, dtype=None, **config_kwargs) -> tuple[KptLLMForKeypoints, KptLLMProcessor]:
    """A new KptLLM++ from a pretrained vision backbone and a pretrained causal LM (hub ids or folders).

    The prompt encoder, prompt feature extractor and projector start from scratch; LoRA adapters are
    added per `config_kwargs` (defaults: the paper's r=128, alpha=256 on the LLM, LoRA on the encoder).
    """
    load = {} if dtype is None else {"dtype": dtype}
    vision_model = _load_vision(vision, **load)
    language_model = AutoModelForCausalLM.from_pretrained(llm, **load)
    tokenizer = AutoTokenizer.from_pretrained(llm)
    add_placeholder_tokens(tokenizer)
    if len(tokenizer) > language_model.get_input_embeddings().num_embeddings:
        language_model.resize_token_embeddings(len(tokenizer))
    mean, std = _image_stats(vision)
    config_kwargs.setdefault("image_mean", mean)
    config_kwargs.setdefault("image_std", std)
    config = KptLLMConfig(
        vision_config=vision_model.config, text_config=language_model.config,
        image_token_id=tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS[0]),
        kpt_token_id=tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS[1]), **config_kwargs,
    )
    model = KptLLMForKeypoints(config, vision_model=vision_model, language_model=language_model)
    if dtype is not None:
        model = model.to(dtype)
    return model, KptLLMProcessor(tokenizer, config)


# ------------------------------------------------------------------------- tiny models
_TINY_WORDS = (
    "nose eye ear mouth lip chin cheek eyebrow forehead head neck throat shoulder elbow wrist hand finger thumb "
    "hip knee ankle foot toe heel paw hoof claw tail base tip root body back spine chest belly withers "
    "left right upper lower front rear middle center top bottom inner outer corner edge point of the and "
    "wing beak leg antenna horn wheel door light mirror window roof seat armrest collar sleeve hem waistline "
    "cuff neckline keypoint object image support example marked which answer name find locate identify"
)


def train_tiny_tokenizer(vocab_size: int = 600, placeholders: bool = True, extra_text=()) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained in-process on the protocol text, keypoint words and `extra_text`.

    Digits are split one per token (as Llama does). With `placeholders`, `<image>` and `<kpt>` are special
    tokens; without, it stands in for a pretrained LLM's tokenizer that has never seen them.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tokenizer.decoder = decoders.ByteLevel()
    corpus = [SYSTEM, ASSISTANT, _TINY_WORDS, " ".join(w.capitalize() for w in _TINY_WORDS.split()),
              "[0.412, 0.305] [1.000, 0.000] 0123456789", *extra_text]
    for task in Task:
        conversation = build_conversation(task, text="left eye", semantics="left eye", xy=(0.5, 0.25))
        corpus += [conversation.prefix, conversation.query, conversation.answer]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  special_tokens=["<unk>", "<s>", "</s>", "<pad>", *(SPECIAL_TOKENS if placeholders else ())],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="<pad>")
    if placeholders:
        add_placeholder_tokens(fast)
    return fast


def tiny_parts(tokenizer, seed: int = 0):
    """Small random vision backbone (DINOv2-style, 64 px, 8 px patches) and Llama LM, reproducible from `seed`."""
    torch.manual_seed(seed)
    vision = AutoModel.from_config(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                intermediate_size=64, patch_size=8, image_size=64))
    text_config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    return vision, AutoModelForCausalLM.from_config(text_config)


def build_tiny(seed: int = 0, **config_kwargs) -> tuple[KptLLMForKeypoints, KptLLMProcessor]:
    """A randomly initialised small KptLLM++ (~0.2 M parameters) with LoRA on both backbones."""
    tokenizer = train_tiny_tokenizer()
    vision, language_model = tiny_parts(tokenizer, seed)
    settings = dict(image_size=64, prompt_pe_dim=32, prompt_extractor_heads=2,
                    lora_r=8, lora_alpha=16, lora_dropout=0.0, vision_lora_r=4, vision_lora_alpha=8)
    settings.update(config_kwargs)
    config = KptLLMConfig(vision_config=vision.config, text_config=language_model.config,
                          image_token_id=tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS[0]),
                          kpt_token_id=tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS[1]), **settings)
    torch.manual_seed(seed + 1)
    model = KptLLMForKeypoints(config, vision_model=vision, language_model=language_model)
    return model, KptLLMProcessor(tokenizer, config)


def save_tiny(out_dir, seed: int = 0) -> None:
    """Write a tiny model + tokenizer that `KeypointPredictor.from_pretrained(out_dir)` loads offline."""
    model, processor = build_tiny(seed)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
