"""Training data: a weighted mixture of keypoint sources -> batches of KptLLM++ training sequences.

    mixture = TrainingMixture(processor, [KeypointWorldSource(), CocoSource("ap10k.json", "images/")], weights=[3, 1])
    batch = mixture.collate([mixture[i] for i in range(8)])   # -> the tensors KptLLMForKeypoints.forward takes

Item `i` of a mixture is a deterministic function of (seed, i): one query instance plus the support
instances its visual questions need, and questions about up to `questions_per_image` of its keypoints
(`questions_per_keypoint` each, so up to their product in questions), each with a task drawn from
`task_weights` — (a) semantic, (b) visual, (c) text, (b)+(c) visual_text — and an identify-then-detect
answer ("left eye [0.412, 0.305]"). With `questions_per_keypoint` q > 1 a keypoint is asked about in up
to q different tasks (drawn without replacement): more supervision per rendered image for the same image
encoding (training batches encode each image once). Semantic questions are asked at visible (v=2)
keypoints and supports marked only where their keypoint is visible: a visual question whose keypoint no
support shows, or a semantic one about an occluded keypoint, is asked by name instead (dropped if that
keypoint already has its text question), so text questions run above their weight (~0.40 for 0.35 on
KeypointWorld). Determinism by index is what makes a resumed run
see exactly the batches an uninterrupted run would.

Augmentation: box jitter (the crop moves and zooms as a detector box would), JPEG (`JpegAugment`: the
images as a file or a camera would give them) and, for sources that allow
it, a horizontal flip that mirrors image, box and points and swaps the source's flip pairs, so that a
"left eye" stays the subject's left eye. A COCO file without a `catalog:` (e.g. MP-100) is not flipped:
nothing says which of its keypoints pair up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from kptllm.batch import KeypointSample, collate_samples
from kptllm.protocols.catalog.descriptions import describe_keypoint
from kptllm.image import load_image
from kptllm.processor import KptLLMProcessor, PreparedImage
from kptllm.protocols.protocol import Task

from .augment import JPEG_STREAM, JpegAugment
from ..data.keypointworld import CATEGORIES, CATEGORY_NAMES, DEFAULT_VERSION, VERSIONS, off_centre, render_scene

TASKS = (Task.TEXT, Task.VISUAL, Task.SEMANTIC, Task.VISUAL_TEXT)
SUBJECTS = {"person": "person", "quadruped": "animal", "face": "person", "car": "car", "chair": "chair"}


@dataclass
class Instance:
    """One annotated object. `keypoints [K, 3]` = (x, y, v) pixels; names are the keypoints' names."""

    image: Image.Image
    bbox: tuple[float, float, float, float]
    keypoints: np.ndarray
    names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    subject: str | None = None

    def flipped(self) -> "Instance":
        """The mirror image: x -> W - x, the box mirrored, left/right keypoints swapped."""
        width = self.image.width
        kpts = self.keypoints.copy()
        labelled = kpts[:, 2] > 0
        kpts[labelled, 0] = width - kpts[labelled, 0]
        for a, b in self.flip_pairs:
            kpts[[a, b]] = kpts[[b, a]]
        x, y, w, h = self.bbox
        return Instance(ImageOps.mirror(self.image), (width - x - w, y, w, h), kpts, self.names, self.flip_pairs,
                        self.subject)


class KeypointWorldSource:
    """Procedural KeypointWorld scenes: a query object and support objects of the same category from other scenes."""

    allows_flip = False  # a mirrored image breaks the world's left=warm / right=cool colour rule

    def __init__(self, categories=CATEGORY_NAMES, off_centre_prob: float = 0.0, version: int = DEFAULT_VERSION,
                 category_weights: dict | None = None):
        """`off_centre_prob`: the share of scenes pasted at a random offset into a larger canvas of fresh
        background (`keypointworld.off_centre`, what `validate --shift` scores), so crops near the old border
        show real background instead of the crop's fill. `version`: the world's version (`keypointworld`).
        `category_weights`: {category: weight} for the query's category (default 1 each, e.g. {quadruped: 2}
        asks about quadrupeds twice as often as about each other category)."""
        if not 0.0 <= off_centre_prob <= 1.0:
            raise ValueError(f"off_centre_prob must lie in [0, 1], not {off_centre_prob}")
        if version not in VERSIONS:
            raise ValueError(f"KeypointWorld has versions {', '.join(map(str, VERSIONS))}, not {version!r}")
        self.categories = tuple(categories)
        self.off_centre_prob = off_centre_prob
        self.version = version
        weights = dict(category_weights or {})
        unknown = set(weights) - set(self.categories)
        if unknown or any(float(w) < 0 for w in weights.values()):
            raise ValueError(f"category_weights: categories {sorted(self.categories)} with weights >= 0, not {weights}")
        raw = np.array([float(weights.get(c, 1.0)) for c in self.categories])
        if raw.sum() <= 0:
            raise ValueError("category_weights: at least one category needs a positive weight")
        self.category_probs = None if not weights else raw / raw.sum()

    def _instance(self, rng, category: str) -> Instance | None:
        # half the scenes hold only this category, half mix it with others (one object is forced to it:
        # rejection sampling re-rendered ~3 scenes per instance, and rendering bounds GPU training)
        scene = render_scene(rng, categories=[category], version=self.version) if rng.random() < 0.5 else \
            render_scene(rng, required=category, version=self.version)
        if self.off_centre_prob and rng.random() < self.off_centre_prob:
            scene = off_centre(scene, rng)
        objects = [o for o in scene.objects if o.category.name == category]
        if not objects:
            return None
        obj = objects[int(rng.integers(len(objects)))]
        cat = CATEGORIES[category]
        return Instance(scene.image, obj.bbox, obj.keypoints, cat.keypoints, cat.flip_pairs, SUBJECTS.get(category))

    def sample(self, rng, shots: int) -> tuple[Instance, list[Instance]]:
        if self.category_probs is None:  # the draw every earlier stage made
            category = self.categories[int(rng.integers(len(self.categories)))]
        else:
            category = self.categories[int(rng.choice(len(self.categories), p=self.category_probs))]
        found = []
        while len(found) < 1 + shots:
            instance = self._instance(rng, category)
            if instance is not None:
                found.append(instance)
        return found[0], found[1:]


class CocoSource:
    """Instances of any COCO-format keypoint file; supports are other instances of the same category.

    Flipped only when `catalog_key` names a keypoint set with flip pairs: a mirrored image turns a left
    keypoint into a right one, and a file alone does not say which keypoints pair up (MP-100's "eyeL").
    """

    def __init__(self, annotations, images, catalog_key: str | None = None, min_keypoints: int = 3, labels=None):
        from kptllm.protocols import catalog

        from ..data import KeypointDataset

        self.dataset = KeypointDataset.load(annotations, images)
        self.by_category: dict[int, list] = {}
        for ann in self.dataset.annotations:
            if not ann.iscrowd and ann.num_keypoints >= min_keypoints and self.dataset.images[ann.image_id].path:
                self.by_category.setdefault(ann.category_id, []).append(ann)
        if not self.by_category:
            raise ValueError(f"{annotations}: no usable instances (labelled keypoints and an image on disk)")
        self.category_ids = sorted(self.by_category)
        self.keypoint_set = catalog.get(catalog_key) if catalog_key else None
        if self.keypoint_set is not None:
            for category_id, pool in self.by_category.items():
                if len(pool[0].keypoints) != len(self.keypoint_set.names):
                    raise ValueError(f"{annotations}: category {category_id} has {len(pool[0].keypoints)} keypoints, "
                                     f"catalog {catalog_key!r} has {len(self.keypoint_set.names)}")
        self.allows_flip = bool(self.keypoint_set is not None and self.keypoint_set.flip_pairs)
        self.labels = labels  # evaluation.data.semantic_labels.SemanticLabels or None (the file's own names)

    def _instance(self, ann) -> Instance:
        category = self.dataset.category_of(ann)
        names = self.keypoint_set.names if self.keypoint_set else category.keypoint_names
        if self.labels is not None:  # a label the set leaves out (numbered, ambiguous) keeps the file's name
            labelled = self.labels.labels_for(category.name, names) or [None] * len(names)
            names = [label or name for label, name in zip(labelled, names)]
        flips = self.keypoint_set.flip_pairs if self.keypoint_set else ()
        image = load_image(self.dataset.images[ann.image_id].path)
        return Instance(image, ann.bbox, ann.keypoints, tuple(names), tuple(flips), category.name)

    def sample(self, rng, shots: int) -> tuple[Instance, list[Instance]]:
        pool = self.by_category[self.category_ids[int(rng.integers(len(self.category_ids)))]]
        picks = rng.choice(len(pool), size=min(len(pool), 1 + shots), replace=False)
        instances = [self._instance(pool[int(k)]) for k in picks]
        return instances[0], instances[1:]


@dataclass(frozen=True)
class BoxJitter:
    """How a training box is disturbed, as a detector's box would be (fractions of the box's size).

    `scale`: log-scale drawn uniformly in [-scale, scale], once for both sides (`independent` False: the
    aspect kept) or for width and height apart (True: the aspect changes, as a detector's box does);
    `shift`: the centre moves uniformly in [-shift, shift] x half the side. A config gives a number (both
    scale and shift, aspect kept: stages 1-13) or a mapping of these fields."""

    scale: float = 0.1
    shift: float = 0.1
    independent: bool = False

    @classmethod
    def of(cls, spec) -> "BoxJitter":
        if isinstance(spec, BoxJitter):
            return spec
        if isinstance(spec, dict):
            unknown = set(spec) - {"scale", "shift", "independent"}
            if unknown:
                raise ValueError(f"box_jitter takes scale, shift, independent; not {sorted(unknown)}")
            jitter = cls(float(spec.get("scale", 0.0)), float(spec.get("shift", 0.0)), bool(spec.get("independent", False)))
        else:
            jitter = cls(float(spec), float(spec))
        if jitter.scale < 0 or jitter.shift < 0:
            raise ValueError(f"box_jitter must not be negative: {spec!r}")
        return jitter


def _jitter_box(bbox, rng, jitter) -> tuple[float, float, float, float]:
    """`bbox` (xywh, pixels) disturbed by `jitter` (a BoxJitter, or a number: the same in scale and shift)."""
    jitter = BoxJitter.of(jitter)
    x, y, w, h = bbox
    if jitter.scale <= 0 and jitter.shift <= 0:
        return bbox
    # the draw order of stages 1-13 (one scale, then the centre) is kept for a number
    scale_w = float(np.exp(rng.uniform(-jitter.scale, jitter.scale)))
    cx = x + w / 2 + rng.uniform(-jitter.shift, jitter.shift) * w / 2
    cy = y + h / 2 + rng.uniform(-jitter.shift, jitter.shift) * h / 2
    scale_h = float(np.exp(rng.uniform(-jitter.scale, jitter.scale))) if jitter.independent else scale_w
    return (cx - w * scale_w / 2, cy - h * scale_h / 2, w * scale_w, h * scale_h)


DEFAULT_TASK_WEIGHTS = {"text": 0.35, "visual": 0.25, "semantic": 0.25, "visual_text": 0.15}


class TrainingMixture:
    """Map-style dataset of training items (lists of `KeypointSample`); see the module docstring."""

    def __init__(self, processor: KptLLMProcessor, sources, weights=None, seed: int = 0, questions_per_image: int = 8,
                 task_weights: dict | None = None, questions_per_keypoint: int = 1, description_prob: float = 0.2, flip_prob: float = 0.5,
                 box_jitter: float | dict | BoxJitter = 0.1, max_shots: int = 3, length: int = 10 ** 12,
                 jpeg: dict | JpegAugment | None = None):
        self.processor = processor
        self.sources = list(sources)
        weights = np.ones(len(self.sources)) if weights is None else np.asarray(weights, dtype=np.float64)
        if len(weights) != len(self.sources) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("give one non-negative weight per source, not all zero")
        self.weights = weights / weights.sum()
        task_weights = task_weights or DEFAULT_TASK_WEIGHTS
        unknown = set(task_weights) - {t.value for t in TASKS}
        if unknown:
            raise ValueError(f"unknown tasks in task_weights: {sorted(unknown)}")
        self.tasks = [Task(t) for t in task_weights]
        self.task_probs = np.asarray(list(task_weights.values()), dtype=np.float64)
        self.task_probs /= self.task_probs.sum()
        self.seed, self.questions_per_image = seed, questions_per_image
        active = int((self.task_probs > 0).sum())  # distinct tasks are drawn among those with a weight
        if not 1 <= questions_per_keypoint <= active:
            raise ValueError(f"questions_per_keypoint must be 1..{active} (one per task with a non-zero weight), "
                             f"got {questions_per_keypoint}")
        self.questions_per_keypoint = questions_per_keypoint
        self.description_prob, self.flip_prob = description_prob, flip_prob
        self.box_jitter = BoxJitter.of(box_jitter)
        self.jpeg = JpegAugment.of(jpeg)
        self.max_shots, self.length = max_shots, length

    def __len__(self) -> int:
        return self.length

    def _prepare(self, instance: Instance, rng, jpeg_rng) -> PreparedImage:
        image = self.jpeg(instance.image, jpeg_rng)
        return self.processor.prepare_image(image, _jitter_box(instance.bbox, rng, self.box_jitter))

    def __getitem__(self, index: int) -> list[KeypointSample]:
        rng = np.random.default_rng([self.seed, int(index)])
        source = self.sources[int(rng.choice(len(self.sources), p=self.weights))]
        shots = 1 if rng.random() < 0.8 or self.max_shots < 2 else int(rng.integers(2, self.max_shots + 1))
        query, supports = source.sample(rng, shots)
        if source.allows_flip and rng.random() < self.flip_prob:
            query = query.flipped()
        jpeg_rng = np.random.default_rng([self.seed, int(index), JPEG_STREAM])  # without jpeg, items are as before
        q_prep = self._prepare(query, rng, jpeg_rng)
        s_preps = [self._prepare(s, rng, jpeg_rng) for s in supports]
        usable = [k for k in range(len(query.names))
                  if query.keypoints[k, 2] > 0 and q_prep.crop.contains(query.keypoints[k, :2])]
        rng.shuffle(usable)
        samples, asked = [], set()
        for k, task in self._questions(usable[: self.questions_per_image], rng):
            name = query.names[k]
            xy = (float(query.keypoints[k, 0]), float(query.keypoints[k, 1]))
            if task is Task.SEMANTIC and query.keypoints[k, 2] < 2:
                task = Task.TEXT  # an occluded point's pixel shows something else: ask for it by name instead
            if task in (Task.VISUAL, Task.VISUAL_TEXT):  # supports are marked where their keypoint is seen
                shown = [(s, p) for s, p in zip(supports, s_preps)
                         if s.keypoints[k, 2] >= 2 and p.crop.contains(s.keypoints[k, :2])]
                if not shown:  # no support shows it: ask by name instead (so text runs above its weight)
                    task = Task.TEXT
            if (k, task) in asked:  # that fallback met a text question the keypoint already has
                continue
            asked.add((k, task))
            text = None
            if task.has_text_prompt:
                text = (describe_keypoint(name, query.subject) if rng.random() < self.description_prob else name)
            if task is Task.SEMANTIC:
                samples.append(KeypointSample(task, q_prep, name, support_points=[xy]))
            elif task is Task.TEXT:
                samples.append(KeypointSample(task, q_prep, name, xy=xy, text=text))
            else:
                samples.append(KeypointSample(task, q_prep, name, xy=xy, text=text, supports=[p for _, p in shown],
                                              support_points=[tuple(float(v) for v in s.keypoints[k, :2]) for s, _ in shown]))
        return samples

    def _questions(self, keypoints: list[int], rng):
        """(keypoint, task) pairs: each keypoint with `questions_per_keypoint` distinct tasks."""
        for k in keypoints:
            if self.questions_per_keypoint == 1:  # the original draw (keeps the data stream of earlier runs)
                yield k, self.tasks[int(rng.choice(len(self.tasks), p=self.task_probs))]
                continue
            for t in rng.choice(len(self.tasks), size=self.questions_per_keypoint, replace=False, p=self.task_probs):
                yield k, self.tasks[int(t)]

    def collate(self, items: list[list[KeypointSample]]) -> dict:
        """Flatten items into one batch of sequences (`collate_samples`)."""
        samples = [s for item in items for s in item]
        if not samples:
            raise ValueError("a batch without questions (every item had no usable keypoint)")
        return collate_samples(self.processor, samples)


def tokenizer_corpus() -> list[str]:
    """Text the embedded model's tokenizer is trained on: every KeypointWorld name and description."""
    lines = []
    for category in CATEGORIES.values():
        for name in category.keypoints:
            lines += [name, describe_keypoint(name, SUBJECTS.get(category.name))]
    return lines


def list_sources(specs: list[dict], base: Path | None = None):
    """Sources and weights from config entries: `{type: keypointworld|coco, weight, categories, off_centre_prob,
    version, category_weights, annotations, images, catalog, labels}` (`labels`: a semantic label set, `kptllm-mp100-v1` or a file, for
    the names a COCO file's keypoints are trained under: the ones `kptllm eval` asks about, "left eye" for
    MP-100's "eyeL")."""
    sources, weights = [], []
    for spec in specs:
        kind = spec.get("type")
        if kind == "keypointworld":
            sources.append(KeypointWorldSource(spec.get("categories", CATEGORY_NAMES),
                                               float(spec.get("off_centre_prob", 0.0)),
                                               int(spec.get("version", DEFAULT_VERSION)), spec.get("category_weights")))
        elif kind == "coco":
            root = Path(base or ".")
            labels = spec.get("labels")
            if labels is not None:  # the names the evaluation asks for (kptllm-mp100-v1 or a label-set file)
                from ..data import semantic_labels

                builtin = semantic_labels.builtin()
                labels = builtin if labels == builtin.name else semantic_labels.load(root / labels)
            sources.append(CocoSource(root / spec["annotations"], root / spec["images"], spec.get("catalog"), labels=labels))
        else:
            raise ValueError(f"unknown data source type {kind!r} (use keypointworld or coco)")
        weights.append(float(spec.get("weight", 1.0)))
    return sources, weights
