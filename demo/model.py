"""Loading the model once per process, a lock around it, and what the page says about it.

The predictor caches one image, so every request holds `MODEL.lock` while it sets the image and
decodes; requests from different users never see each other's image. With the `spaces` package present
(Hugging Face ZeroGPU), GPU work runs under its `spaces.GPU` decorator.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from kptllm import KeypointPredictor
from kptllm.embedded import EMBEDDED_MODEL_DIR

from .inputs import model_error

try:  # Hugging Face Spaces (ZeroGPU); absent elsewhere
    import spaces  # type: ignore

    gpu = spaces.GPU
except ImportError:  # pragma: no cover - depends on the host
    def gpu(fn=None, **_kwargs):
        return fn if fn is not None else (lambda f: f)


@dataclass
class LoadedModel:
    predictor: KeypointPredictor
    source: str  # what the user asked for (path or hub id); stays on the server
    summary: str  # markdown: which model and what it was trained on
    name: str = ""  # what visitors see and exports carry: never a server path (`public_model_name`)
    lock: threading.Lock = field(default_factory=threading.Lock)
    card: str = ""  # the model card (markdown) shown folded under the header; "" when there is none


def resolve_model(model: str | None) -> str | None:
    """--model, else $KPTLLM_MODEL, else None (the embedded KeypointWorld model)."""
    return model or os.environ.get("KPTLLM_MODEL") or None


def public_model_name(model: str | None) -> str:
    """The model as visitors may see it: the embedded model's name, a local folder's last part, or a hub id."""
    if model is None:
        return f"{EMBEDDED_MODEL_DIR.name} (embedded)"
    path = Path(model)
    return path.name if path.is_absolute() or path.exists() else model


def is_embedded(loaded: LoadedModel) -> bool:
    """Whether the app runs the embedded KeypointWorld model (then the embedded detector knows its world)."""
    try:
        return Path(loaded.source).resolve() == EMBEDDED_MODEL_DIR.resolve()
    except OSError:
        return False


def model_card_text(path: str | Path | None) -> str:
    """The model card (README.md beside the weights) as markdown, "" when there is none."""
    folder = Path(path) if path is not None else EMBEDDED_MODEL_DIR
    card = folder / "README.md" if folder.is_dir() else None
    return card.read_text(encoding="utf-8") if card is not None and card.is_file() else ""


def model_card_summary(path: str | Path | None) -> str:
    """One paragraph: the model's name and what it was trained on, from its model card (README.md)."""
    folder = Path(path) if path is not None else EMBEDDED_MODEL_DIR
    card = folder / "README.md" if folder.is_dir() else None
    name = "embedded KeypointWorld model" if path is None else public_model_name(str(path))
    if card is None or not card.is_file():
        return (f"**Model:** `{name}` (no model card found next to the weights: what it was trained on is "
                "unknown; check before trusting its answers on your images).")
    text = card.read_text(encoding="utf-8")
    title = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("# ")), name)
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip() and not p.lstrip().startswith(("#", "|", "```"))]
    first = " ".join(paragraphs[0].split()) if paragraphs else ""
    return f"**Model:** `{title}` — {first} ([model card](#model-card))"


def load_model(model: str | None = None, device: str | None = None) -> LoadedModel:
    """Load once: CUDA + bf16 when available, else CPU + fp32 (the predictor's defaults)."""
    source = resolve_model(model)
    predictor = KeypointPredictor.from_pretrained(source, device=device)
    summary = model_card_summary(source)
    summary += f"  \n*Running on {predictor.device.type.upper()}, {str(predictor.model.dtype).replace('torch.', '')}.*"
    return LoadedModel(predictor, source or str(EMBEDDED_MODEL_DIR), summary, name=public_model_name(source),
                       card=model_card_text(source))


def file_sha256(path: Path, limit: int = 1 << 30) -> str | None:
    if not path.is_file() or path.stat().st_size > limit:
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- inference (one lock, GPU decorator)

@gpu
def run_detect(loaded: LoadedModel, image, bbox, names) -> list[dict]:
    """Task (c) on one image; results as dicts (KeypointResult.to_dict())."""
    with loaded.lock:
        try:
            loaded.predictor.set_image(image, bbox=bbox)
            return [r.to_dict() for r in loaded.predictor.detect(names)]
        except ValueError as exc:
            raise model_error(exc) from None
        finally:
            loaded.predictor.reset_image()


@gpu
def run_detect_boxes(loaded: LoadedModel, image, boxes, names) -> list[list[dict]]:
    """Task (c) in every box (xywh) of `image` in one call (`KeypointPredictor.detect_objects`): one list of
    results per box, all in pixels of `image`."""
    with loaded.lock:
        try:
            return [[r.to_dict() for r in results] for results in loaded.predictor.detect_objects(image, boxes, names)]
        except ValueError as exc:
            raise model_error(exc) from None


@gpu
def run_describe(loaded: LoadedModel, image, bbox, points) -> list[dict]:
    with loaded.lock:
        try:
            loaded.predictor.set_image(image, bbox=bbox)
            return [r.to_dict() for r in loaded.predictor.describe(list(points))]
        except ValueError as exc:
            raise model_error(exc) from None
        finally:
            loaded.predictor.reset_image()


@gpu
def run_example(loaded: LoadedModel, image, bbox, supports, support_points, support_boxes, names=None) -> list[dict]:
    with loaded.lock:
        try:
            loaded.predictor.set_image(image, bbox=bbox)
            results = loaded.predictor.detect_from_example(supports, support_points, support_bbox=support_boxes, names=names)
            return [r.to_dict() for r in results]
        except ValueError as exc:
            raise model_error(exc) from None
        finally:
            loaded.predictor.reset_image()
