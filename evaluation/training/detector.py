"""Training the embedded KeypointWorld detector: transformers' RT-DETR from scratch on rendered scenes.

    kptllm train-detector --config configs/detector_keypointworld_cpu.yaml --output runs/det   # start or resume
    bash evaluation/training/cpu_run.sh runs/det detector      # the same in the background, restarted if it stops

Read it top to bottom: build the detector from the config's `detector` section (`build_detector`; or load the
weights named by `init:`, e.g. the shipped detector, to go on training it in a new run), then for
each step render `batch_size` scenes (item i of the run is `render_scene(default_rng([seed, i]))`, pasted
off-centre with probability `off_centre_prob`, made of 2-3 objects with probability `crowded_prob` and passed
through JPEG as `jpeg` says, so a resumed run sees the same data), the model's own loss
(Hungarian matching, focal/VFL + L1 + GIoU, with RT-DETR's denoising queries), AdamW, warmup + cosine over
`time_budget` seconds of training. Every `log_every` steps a line goes to OUTPUT/metrics.jsonl; every
`save_every` steps OUTPUT/checkpoint/ gets model, optimizer, step and trained seconds (a resumed run goes on
from there and counts the seconds already trained); every `validate_every` steps box AP (pycocotools) on
held-out scenes of the validation seed (plain and off-centre, JPEG as the sets' files) goes into the log and the best model so far
into OUTPUT/best (chosen on the validation set only). Ctrl-C saves after the step.

The detector sees every image as at inference (`ClosedSetDetector.encode`): stretched to `image_size` squared, or,
with `max_size`, at its own aspect (shorter side `image_size`, longer at most `max_size`), a batch zero-padded to its
largest image and the boxes normalized to the padded frame.
"""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from kptllm.detection import ClosedSetDetector

from ..data.keypointworld import ALIASES as KEYPOINTWORLD_ALIASES
from ..data.keypointworld import CATEGORY_NAMES, FILE_QUALITY, as_file, coco_categories, off_centre, render_scene
from ..detected_boxes import coco_detections
from ..metrics import box_ap
from .augment import CROWD_STREAM, JPEG_STREAM, JpegAugment
from .validate import HELD_OUT_SEED



@dataclass
class DetectorSpec:
    """The network (transformers' RTDetrConfig with a small ResNet). Defaults: about 0.7 M parameters."""

    image_size: int = 192
    embedding_size: int = 32
    hidden_sizes: list = field(default_factory=lambda: [32, 64, 128, 256])
    depths: list = field(default_factory=lambda: [1, 1, 1, 1])
    d_model: int = 64
    ffn_dim: int = 256
    heads: int = 4
    encoder_layers: int = 1
    decoder_layers: int = 3
    num_queries: int = 30
    num_denoising: int = 30
    # None: every image stretched to image_size squared; a number: the image's aspect kept, its shorter side at
    # image_size and its longer at most max_size (a wide off-centre canvas is read wide, its objects unsqueezed)
    max_size: int | None = None

    def __post_init__(self):
        if self.image_size <= 0 or self.image_size % 32:
            raise ValueError(f"detector image_size must be a positive multiple of 32 (the backbone's stride: its "
                             f"feature maps must halve evenly), not {self.image_size}")
        if self.max_size is not None and (isinstance(self.max_size, bool) or not isinstance(self.max_size, int)
                                          or self.max_size < self.image_size):
            raise ValueError(f"detector max_size is a whole number of pixels >= image_size ({self.image_size}), "
                             f"or null to stretch every image to a square, not {self.max_size!r}")

    def processor_size(self) -> dict:
        """The image processor's `size` for this spec (see `ClosedSetDetector.encode`)."""
        if self.max_size is None:
            return {"height": self.image_size, "width": self.image_size}
        return {"shortest_edge": self.image_size, "longest_edge": self.max_size}


@dataclass
class DetectorTrainSettings:
    steps: int = 100_000  # an upper bound when time_budget is set
    time_budget: float | None = None  # seconds of training in all; the cosine spans them
    batch_size: int = 8
    lr: float = 2e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1
    grad_clip: float = 0.1
    seed: int = 0
    off_centre_prob: float = 0.3
    # share of items drawn with 2-3 objects whatever the world's own draw (1, 1, 2, 2, 3); 0 keeps the world's.
    # The chain's misses are in crowded scenes (benchmarks/detector_operating_point.py)
    crowded_prob: float = 0.0
    jpeg: dict | None = None  # {prob, quality: [lo, hi]}: items passed through JPEG (evaluation.training.augment)
    log_every: int = 50
    save_every: int = 500
    validate_every: int = 2000
    validate_images: int = 100  # per kind (plain and off-centre), of the validation seed
    threads: int | None = 1  # torch threads (a background run on a 2-core machine takes one)

    def __post_init__(self):  # a bad config is refused when it is read, before a run folder is made
        for name in ("off_centre_prob", "crowded_prob"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"{name} is a probability in [0, 1], not {value!r}")
        JpegAugment.of(self.jpeg)


def build_detector(spec: DetectorSpec, categories=CATEGORY_NAMES, aliases=None) -> ClosedSetDetector:
    from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrImageProcessorPil, RTDetrResNetConfig

    backbone = RTDetrResNetConfig(embedding_size=spec.embedding_size, hidden_sizes=list(spec.hidden_sizes),
                                  depths=list(spec.depths), layer_type="bottleneck",
                                  out_features=["stage2", "stage3", "stage4"])
    widths = list(spec.hidden_sizes[1:])  # the three stages the encoder reads
    config = RTDetrConfig(
        backbone_config=backbone, encoder_in_channels=widths, encoder_hidden_dim=spec.d_model, d_model=spec.d_model,
        decoder_in_channels=[spec.d_model] * 3, encoder_ffn_dim=spec.ffn_dim, decoder_ffn_dim=spec.ffn_dim,
        encoder_attention_heads=spec.heads, decoder_attention_heads=spec.heads, encoder_layers=spec.encoder_layers,
        decoder_layers=spec.decoder_layers, num_queries=spec.num_queries, num_denoising=spec.num_denoising,
        id2label=dict(enumerate(categories)), label2id={c: i for i, c in enumerate(categories)},
        anchor_image_size=None, eval_size=None)
    config.phrase_aliases = dict(KEYPOINTWORLD_ALIASES if aliases is None else aliases)
    model = RTDetrForObjectDetection(config)
    image_processor = RTDetrImageProcessorPil(size=spec.processor_size())
    return ClosedSetDetector(model, image_processor, device="cpu")


# ----------------------------------------------------------------------------------------- data
def training_scene(seed: int, index: int, off_centre_prob: float, crowded_prob: float = 0.0, jpeg=None):
    """Item `index` of a run: a KeypointWorld scene, pasted off-centre with probability `off_centre_prob`; with
    probability `crowded_prob` it has 2 or 3 objects, and `jpeg` (a `JpegAugment` or its mapping) may pass it
    through JPEG (each from its own stream, `augment.CROWD_STREAM` and `augment.JPEG_STREAM`, so that without them
    the items are those of runs made before the options)."""
    count = None
    if crowded_prob > 0:
        crowd = np.random.default_rng([seed, index, CROWD_STREAM])
        if crowd.random() < crowded_prob:
            count = int(crowd.choice([2, 3]))
    rng = np.random.default_rng([seed, index])
    scene = render_scene(rng, num_objects=count)
    if rng.random() < off_centre_prob:
        scene = off_centre(scene, rng)
    augment = JpegAugment.of(jpeg)
    if augment.prob > 0:
        scene.image = augment(scene.image, np.random.default_rng([seed, index, JPEG_STREAM]))
    return scene


def targets(scene, span: tuple[float, float] | None = None) -> dict:
    """RT-DETR's labels for one scene: class indices and boxes as normalized (cx, cy, w, h) of the frame the
    network reads, which spans `span` = (width, height) of the scene's pixels (`ClosedSetDetector.encode`;
    None: the image itself)."""
    w, h = span or scene.image.size
    boxes = [((x + bw / 2) / w, (y + bh / 2) / h, bw / w, bh / h) for x, y, bw, bh in (o.bbox for o in scene.objects)]
    return {"class_labels": torch.tensor([CATEGORY_NAMES.index(o.category.name) for o in scene.objects], dtype=torch.long),
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)}


def held_out_scenes(count: int, seed: int = HELD_OUT_SEED, offcentre: bool = False):
    """`count` scenes of a held-out seed as `write_dataset` renders them (scene i from rng [seed, i])."""
    scenes = []
    for i in range(count):
        scene = render_scene(np.random.default_rng([seed, i]))
        scenes.append(off_centre(scene, np.random.default_rng([seed, i, 1])) if offcentre else scene)
    return scenes


def scenes_as_coco(scenes) -> dict:
    """Ground truth of in-memory scenes as a COCO dict (image ids 1..n), for `box_ap`."""
    images, annotations = [], []
    for i, scene in enumerate(scenes, start=1):
        images.append({"id": i, "file_name": f"{i}.jpg", "width": scene.image.width, "height": scene.image.height})
        for obj in scene.objects:
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": obj.category.id,
                                "bbox": list(obj.bbox), "area": obj.area, "iscrowd": 0})
    return {"images": images, "annotations": annotations, "categories": coco_categories()}


def validate_detector(detector: ClosedSetDetector, images: int, seed: int = HELD_OUT_SEED,
                      jpeg_quality: int | None = FILE_QUALITY) -> dict:
    """Box AP / AP50 on `images` held-out scenes, plain and off-centre (the same scenes pasted), each image as a
    set's file holds it (JPEG at `jpeg_quality`; None: lossless): {"plain": {AP, AP50}, "offcentre": {...},
    "jpeg_quality": ...}."""
    row = {}
    for kind, offcentre in (("plain", False), ("offcentre", True)):
        scenes = held_out_scenes(images, seed, offcentre)
        if jpeg_quality is not None:
            for scene in scenes:
                scene.image = as_file(scene.image, jpeg_quality)
        ids = {c["name"]: c["id"] for c in coco_categories()}
        found = coco_detections(detector, [s.image for s in scenes], list(range(1, len(scenes) + 1)), ids)
        stats = box_ap(scenes_as_coco(scenes), found)
        row[kind] = {"AP": round(stats["AP"], 4), "AP50": round(stats["AP50"], 4)}
    return row | {"jpeg_quality": jpeg_quality}


def selection_score(validation: dict) -> float:
    return (validation["plain"]["AP"] + validation["offcentre"]["AP"]) / 2


# ----------------------------------------------------------------------------------------- config
@dataclass
class DetectorTrainConfig:
    detector: DetectorSpec
    train: DetectorTrainSettings
    path: str | None = None
    init: str | None = None  # start from these weights ("embedded" or a detector folder) instead of from scratch

    @classmethod
    def load(cls, path) -> "DetectorTrainConfig":
        raw = yaml.safe_load(Path(path).read_text()) or {}
        unknown = set(raw) - {"detector", "train", "init"}
        if unknown:
            raise ValueError(f"{path}: unknown sections {sorted(unknown)} (a detector config has detector:, train: "
                             "and optionally init:)")
        try:
            return cls(DetectorSpec(**(raw.get("detector") or {})), DetectorTrainSettings(**(raw.get("train") or {})),
                       str(path), raw.get("init"))
        except TypeError as err:
            raise ValueError(f"{path}: {err}") from None


# ----------------------------------------------------------------------------------------- the loop
def _lr_factor(step: int, spent: float, settings: DetectorTrainSettings) -> float:
    """Warmup over `warmup_steps`, then a cosine over the fraction of the run done (time or steps)."""
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, spent)))
    return settings.min_lr_ratio + (1 - settings.min_lr_ratio) * cosine


def _save(detector, optimizer, output: Path, step: int, trained: float) -> None:
    checkpoint = output / "checkpoint"
    partial = output / "checkpoint.partial"
    detector.save_pretrained(partial / "model")
    torch.save(optimizer.state_dict(), partial / "optimizer.pt")
    (partial / "step.json").write_text(json.dumps({"step": step, "trained_seconds": round(trained, 2)}))
    if checkpoint.exists():
        import shutil

        shutil.rmtree(checkpoint)
    partial.rename(checkpoint)  # a crash mid-save leaves the last whole checkpoint


def _log(output: Path, row: dict) -> None:
    with (output / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")


def _best_score(output: Path, jpeg_quality: int | None = FILE_QUALITY) -> float:
    """The selection score of OUTPUT/best; -1 without one, or when it was validated on other images (a run begun
    before validation saw JPEG files scored lossless renders, ~0.02-0.06 higher: not comparable)."""
    best = output / "best" / "validation.json"
    if not best.is_file():
        return -1.0
    row = json.loads(best.read_text())
    seen = row["validation"].get("jpeg_quality", row.get("jpeg_quality"))  # stage 5's first rows kept it outside
    return selection_score(row["validation"]) if seen == jpeg_quality else -1.0


def train_detector(config: DetectorTrainConfig, output, resume: bool = False, clock=time.time) -> dict:
    """Train (or resume) the detector; returns {"step", "loss", "output"}. `clock` is for tests."""
    settings, output = config.train, Path(output)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    checkpoint = output / "checkpoint"
    if resume and not (checkpoint / "step.json").is_file():
        raise ValueError(f"--resume: no checkpoint in {checkpoint}")
    if not resume and (output / "metrics.jsonl").exists():
        raise ValueError(f"{output} already holds a run: pass --resume to continue it, or another --output")
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if resume:
        detector = ClosedSetDetector.from_pretrained(checkpoint / "model", device=device)
        state = json.loads((checkpoint / "step.json").read_text())
        start, trained_before = int(state["step"]), float(state["trained_seconds"])
    else:  # a new run: from scratch, or from shipped weights (`init`: runs/ does not outlive a session, assets/ does)
        if config.init:
            from kptllm.detection import load_detector

            detector = load_detector(config.init, device=device)
            # the input size may change between stages: the network reads any size (RT-DETR's sine positions and
            # anchors are made per image size when anchor_image_size is None), only the image processor resizes
            detector.image_processor.size = config.detector.processor_size()
        else:
            detector = build_detector(config.detector)
            detector.model.to(device)
            detector.device = torch.device(device)
        start, trained_before = 0, 0.0
        (output / "run.json").write_text(json.dumps({"config": config.path, "init": config.init,
                                                     "detector": asdict(config.detector),
                                                     "train": asdict(settings), "parameters": sum(
                                                         p.numel() for p in detector.model.parameters())}, indent=1))
    model = detector.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    if resume:
        optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
    metrics = output / "metrics.jsonl"
    if metrics.is_file():  # steps logged after the last save run again now
        kept = [line for line in metrics.read_text().splitlines(keepends=True) if json.loads(line).get("step", 0) <= start]
        metrics.write_text("".join(kept))

    jpeg = JpegAugment.of(settings.jpeg)  # checked before the first step
    stop = {"requested": False}
    previous = signal.signal(signal.SIGINT, lambda *_: stop.update(requested=True))
    began, window, step, loss_value = clock(), [], start, math.nan

    def trained() -> float:
        return trained_before + clock() - began

    try:
        while step < settings.steps:
            if settings.time_budget is not None and trained() >= settings.time_budget:
                break
            spent = trained() / settings.time_budget if settings.time_budget else step / settings.steps
            for group in optimizer.param_groups:
                group["lr"] = settings.lr * _lr_factor(step, spent, settings)
            first = step * settings.batch_size
            scenes = [training_scene(settings.seed, first + k, settings.off_centre_prob, settings.crowded_prob, jpeg)
                      for k in range(settings.batch_size)]
            pixels, spans = detector.encode([s.image for s in scenes])
            labels = [{k: v.to(device) for k, v in targets(s, span).items()} for s, span in zip(scenes, spans)]
            model.train()
            loss = model(pixel_values=pixels.to(device), labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window.append(float(loss.detach()))
            done = stop["requested"] or step >= settings.steps or (
                settings.time_budget is not None and trained() >= settings.time_budget)
            if step % settings.log_every == 0 or done:
                loss_value, window = float(np.mean(window)), []
                _log(output, {"step": step, "loss": round(loss_value, 4), "lr": optimizer.param_groups[0]["lr"],
                              "elapsed": round(trained(), 1)})
            if settings.validate_every and (step % settings.validate_every == 0 or done):
                paused = clock()
                model.eval()
                row = {"step": step, "elapsed": round(trained(), 1),
                       "validation": validate_detector(detector, settings.validate_images)}
                _log(output, row)
                if selection_score(row["validation"]) > _best_score(output):
                    detector.save_pretrained(output / "best")
                    (output / "best" / "validation.json").write_text(json.dumps(row))
                began += clock() - paused  # validation is not training time
            if step % settings.save_every == 0 or done:
                _save(detector, optimizer, output, step, trained())
            if done:
                break
    finally:
        signal.signal(signal.SIGINT, previous)
    return {"step": step, "loss": loss_value, "output": str(output)}
