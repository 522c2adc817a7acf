"""Open-vocabulary object boxes with GroundingDINO (transformers' `GroundingDinoForObjectDetection`).

    det = GroundingDinoDetector.from_pretrained()                     # IDEA-Research/grounding-dino-tiny
    det.detect(image, "person. dog.", box_threshold=0.35, text_threshold=0.25)   # -> [Detection, ...]

We use transformers rather than `groundingdino-py`: that package pulls a CUDA build of torch, pins an old
`supervision` and fetches BERT from the hub at run time; transformers' port needs nothing beyond the
checkpoint. `local_files_only=True` loads from the local cache only (no network), which is how the demo
starts.
"""

from __future__ import annotations

import torch

from ..image import load_image
from .base import Detection, clip_box, normalize_query

DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-tiny"


class GroundingDinoDetector:
    """Open vocabulary: any phrase; `name` says which detector answered (the demo shows it)."""

    kind = "GroundingDINO"

    def __init__(self, model, processor, device=None):
        self.model = model.eval()
        self.processor = processor
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device)

    @classmethod
    def from_pretrained(cls, path_or_id: str = DEFAULT_DETECTOR, device=None, local_files_only: bool = False):
        from transformers import AutoProcessor, GroundingDinoForObjectDetection

        processor = AutoProcessor.from_pretrained(path_or_id, local_files_only=local_files_only)
        model = GroundingDinoForObjectDetection.from_pretrained(path_or_id, local_files_only=local_files_only)
        return cls(model, processor, device)

    @property
    def max_query_tokens(self) -> int:
        """How many text tokens the detector reads (GroundingDINO's `max_text_len`, 256 for the released models)."""
        return int(getattr(self.model.config, "max_text_len", 256))

    @torch.no_grad()
    def detect(self, image, text: str, box_threshold: float = 0.35, text_threshold: float = 0.25,
               max_detections: int = 20) -> list[Detection]:
        """Boxes for the phrases in `text` (e.g. "person. dog."), best first, at most `max_detections`.

        `image`: a path, PIL image or numpy array, read as `KeypointPredictor.set_image` reads it (EXIF
        rotation applied, 16-bit scaled to 8): the boxes are xyxy pixels of that frame, so `Detection.xywh`
        can go straight to `set_image(image, bbox=...)`. ValueError for an empty query or one longer than
        `max_query_tokens`.
        """
        query = normalize_query(text)
        if not query:
            raise ValueError("no object phrase given")
        tokens = len(self.processor.tokenizer(query)["input_ids"])
        if tokens > self.max_query_tokens:
            raise ValueError(f"the object query is {tokens} tokens long; the detector reads at most {self.max_query_tokens}")
        image = load_image(image)
        inputs = self.processor(images=image, text=query, return_tensors="pt").to(self.device)
        outputs = self.model(**inputs)
        result = self.processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=box_threshold, text_threshold=text_threshold,
            target_sizes=[(image.height, image.width)])[0]
        labels = result["text_labels"] if "text_labels" in result else result["labels"]  # names, not ids (transformers 5)
        found = []
        for box, score, label in zip(result["boxes"].tolist(), result["scores"].tolist(), labels):
            xyxy = clip_box(box, image.width, image.height)
            if xyxy is not None:
                found.append(Detection(xyxy, float(score), str(label) or query.split(".")[0]))
        found.sort(key=lambda d: -d.score)
        return found[:max_detections]


def tiny_random_detector(seed: int = 0, device="cpu") -> GroundingDinoDetector:
    """A tiny random GroundingDINO built offline (tests): tiny Swin + tiny BERT, tokenizer made in-process."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (BertConfig, BertTokenizerFast, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor, SwinConfig)

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "person", "dog", "cat", "car", "chair", "face", "animal", "a"]
    vocab = {w: k for k, w in enumerate(words)}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer = BertTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]", do_lower_case=True)
    torch.manual_seed(seed)
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4,
                                   image_size=64, out_features=["stage2", "stage3", "stage4"]),
        text_config=BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=64),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=10, num_feature_levels=3,
        encoder_n_points=2, decoder_n_points=2, max_text_len=32)
    model = GroundingDinoForObjectDetection(config)
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})
    return GroundingDinoDetector(model, GroundingDinoProcessor(image_processor, tokenizer), device)
