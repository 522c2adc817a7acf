"""`KptLLMProcessor`: images -> normalised crop tensors, conversations -> token ids (and back).

It owns the crop (bbox -> padded square -> resize) and its inverse, and the tokenisation of the text
protocol's pieces. Training and inference both go through `encode_conversation`, so they see the
same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from .modeling.configuration import KptLLMConfig
from .image import SquareCrop, crop_image, load_image, square_crop
from .protocols.protocol import IMAGE_TOKEN, KPT_TOKEN, SPECIAL_TOKENS, Conversation
from .protocols.checkpoints import get_protocol

IGNORE_INDEX = -100


@dataclass
class PreparedImage:
    """A loaded image and its model input. `pixel_values [3, S, S]` float32; `crop` maps pixels <-> crop frame."""

    pixel_values: torch.Tensor
    crop: SquareCrop
    width: int
    height: int


@dataclass
class EncodedConversation:
    """Token ids of the three pieces; `prefix_ids` starts with BOS and has `<image>` expanded to N ids."""

    prefix_ids: list[int]
    query_ids: list[int]
    answer_ids: list[int]  # ends with EOS; empty at inference


def add_placeholder_tokens(tokenizer: PreTrainedTokenizerBase) -> None:
    """Register `<image>` and `<kpt>` as special tokens (no-op when present) and make sure a pad token exists."""
    missing = [t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token


class KptLLMProcessor:
    """Image and text preprocessing for one model configuration."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: KptLLMConfig):
        add_placeholder_tokens(tokenizer)
        self.tokenizer = tokenizer
        self.image_size = config.image_size
        self.crop_padding = config.crop_padding
        self.num_image_tokens = config.num_image_tokens
        self.mean = torch.tensor(config.image_mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(config.image_std, dtype=torch.float32)[:, None, None]
        # Fill outside the image with the mean colour (zero after normalisation) unless the checkpoint says black.
        self.fill = (0, 0, 0) if config.crop_fill == "black" else tuple(int(round(255 * m)) for m in config.image_mean)
        self.interpolation = config.crop_interpolation
        self.protocol = get_protocol(config)
        self._token_owner, self._token_cache = None, {}  # see _tokens
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.kpt_token_id = tokenizer.convert_tokens_to_ids(KPT_TOKEN)
        if config.image_token_id is not None and config.image_token_id != self.image_token_id:
            raise ValueError("the tokenizer's <image> id does not match the model config")
        if config.kpt_token_id is not None and config.kpt_token_id != self.kpt_token_id:
            raise ValueError("the tokenizer's <kpt> id does not match the model config")
        self.eos_token_id = tokenizer.eos_token_id
        self.pad_token_id = tokenizer.pad_token_id
        if self.eos_token_id is None:
            raise ValueError("the tokenizer needs an EOS token")

    @classmethod
    def from_pretrained(cls, path, config: KptLLMConfig | None = None) -> "KptLLMProcessor":
        config = config if config is not None else KptLLMConfig.from_pretrained(path)
        return cls(AutoTokenizer.from_pretrained(path), config)

    def save_pretrained(self, path) -> None:
        self.tokenizer.save_pretrained(path)

    # ----------------------------------------------------------------- images
    def prepare_image(self, image, bbox=None) -> PreparedImage:
        """Load `image` (path / PIL / numpy, any mode) and cut the model input around `bbox` (xywh; None = whole image)."""
        rgb = load_image(image)
        crop = square_crop(rgb.size, bbox, self.image_size, self.crop_padding)
        return PreparedImage(self.normalize(crop_image(rgb, crop, self.fill, self.interpolation)), crop, rgb.width, rgb.height)

    def normalize(self, crop) -> torch.Tensor:
        """RGB `S x S` PIL crop -> `[3, S, S]` float32 normalised with the encoder's mean/std."""
        array = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (array - self.mean) / self.std

    # ----------------------------------------------------------------- text
    _TOKEN_CACHE_SIZE = 4096

    def _tokens(self, text: str, first: bool = False) -> list[int]:
        """Token ids of one piece, memoised: training tokenises the same prefix and instructions for every
        sequence (a third of the data loader's time before). The memo belongs to the tokenizer and protocol
        it was filled with (replacing either starts afresh) and is emptied when full (answers with
        coordinates rarely repeat)."""
        owner = self._token_owner
        if owner is None or owner[0] is not self.tokenizer or owner[1] is not self.protocol \
                or len(self._token_cache) >= self._TOKEN_CACHE_SIZE:
            self._token_owner, self._token_cache = (self.tokenizer, self.protocol), {}
        ids = self._token_cache.get((text, first))
        if ids is None:
            ids = self._token_cache[(text, first)] = self.protocol.tokenize(self.tokenizer, text, first=first)
        return list(ids)

    def _special_strings(self) -> tuple[str, ...]:
        """The tokenizer's special tokens (BOS, EOS, PAD, UNK, extras) but our `<image>` / `<kpt>` placeholders."""
        tokenizer = self.tokenizer
        if getattr(self, "_special_owner", None) is not tokenizer:
            found = {str(t) for t in tokenizer.all_special_tokens} - set(SPECIAL_TOKENS)
            self._special_owner, self._special = tokenizer, tuple(sorted(t for t in found if t.strip()))
        return self._special

    def encode_prefix(self, prefix: str | None = None) -> list[int]:
        """BOS + the prefix tokens (default: the protocol's) with its one `<image>` expanded to N placeholders."""
        ids = self._tokens(self.protocol.prefix if prefix is None else prefix, first=True)
        if ids.count(self.image_token_id) != 1:
            raise ValueError("the prefix must contain exactly one <image> token")
        at = ids.index(self.image_token_id)
        ids = ids[:at] + [self.image_token_id] * self.num_image_tokens + ids[at + 1:]
        return ids if self.tokenizer.bos_token_id is None else [self.tokenizer.bos_token_id] + ids

    def encode_conversation(self, conversation: Conversation) -> EncodedConversation:
        """Token ids of the three pieces; ValueError when the query holds one of the tokenizer's special
        tokens as text (a keypoint name "</s>" would end the prompt)."""
        for token in self._special_strings():
            if token in conversation.query:
                raise ValueError(f"keypoint text must not contain the tokenizer's special token {token}")
        answer = [] if conversation.answer is None else self._tokens(conversation.answer) + [self.eos_token_id]
        return EncodedConversation(self.encode_prefix(conversation.prefix), self._tokens(conversation.query), answer)

    def training_features(self, conversation: Conversation) -> dict[str, list[int]]:
        """`input_ids` and `labels` (IGNORE_INDEX everywhere but the answer and its EOS) of one sequence."""
        if conversation.answer is None:
            raise ValueError("a training conversation needs an answer")
        enc = self.encode_conversation(conversation)
        context = enc.prefix_ids + enc.query_ids
        return {"input_ids": context + enc.answer_ids, "labels": [IGNORE_INDEX] * len(context) + enc.answer_ids}

    def pad(self, sequences: list[list[int]], value: int) -> torch.Tensor:
        """Right-pad to `[B, L_max]`."""
        width = max(len(s) for s in sequences)
        return torch.tensor([s + [value] * (width - len(s)) for s in sequences], dtype=torch.long)

    def collate_text(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        """Batch `training_features` outputs: input_ids, attention_mask, labels (right padding)."""
        ids = [f["input_ids"] for f in features]
        return {
            "input_ids": self.pad(ids, self.pad_token_id),
            "attention_mask": self.pad([[1] * len(s) for s in ids], 0),
            "labels": self.pad([f["labels"] for f in features], IGNORE_INDEX),
        }

    def decode(self, ids) -> str:
        """Token ids -> text, dropping only BOS, EOS and padding: a generated `<image>` or `<kpt>` stays in
        the text so that `parse_answer` rejects the answer (skip_special_tokens would hide it)."""
        skip = {self.tokenizer.bos_token_id, self.eos_token_id, self.pad_token_id} - {None}
        ids = [int(i) for i in ids]
        return self.tokenizer.decode([i for i in ids if i not in skip], skip_special_tokens=False)

    def decode_prefixes(self, ids) -> list[str]:
        """`[decode(ids[:1]), decode(ids[:2]), ...]`: where each token's text ends in the answer (the score reads
        the coordinate digits' tokens). Straight from the Rust tokenizer when there is one (its `decode_batch`
        is slower for a few short prefixes: it starts a thread pool), else one `decode` per prefix; the same
        texts either way (tested)."""
        skip = {self.tokenizer.bos_token_id, self.eos_token_id, self.pad_token_id} - {None}
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None or getattr(self.tokenizer, "clean_up_tokenization_spaces", False):
            return [self.decode(ids[:k + 1]) for k in range(len(ids))]
        kept, prefixes = [], []
        for i in ids:
            if int(i) not in skip:
                kept.append(int(i))
            prefixes.append(list(kept))
        return [backend.decode(prefix, skip_special_tokens=False) for prefix in prefixes]
