"""Reading COCO-format keypoint annotations of any dataset.

Handles: any number of categories and keypoints; 1-based skeletons (COCO convention) and 0-based ones
(MP-100, ATRW, Animal Kingdom); `v` flags (0 unlabelled, 1 labelled hidden, 2 visible); crowd
annotations; missing or degenerate boxes (rebuilt from the labelled keypoints, else the whole image);
image paths with dataset prefixes (Human-Art's `HumanArt/images/...`); categories whose name list
is longer than the keypoints (Human-Art's `keypoints_21`) or missing (300W, WFLW: index names);
annotations whose category is not listed (Animal Kingdom test files).
Indices in memory are 0-based; coordinates are pixels of the original image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    keypoint_names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]  # 0-based
    supercategory: str | None = None


@dataclass(frozen=True)
class ImageInfo:
    id: int
    file_name: str
    width: int | None
    height: int | None
    path: Path | None  # resolved on disk, None when not found


@dataclass
class Annotation:
    id: int
    image_id: int
    category_id: int
    keypoints: np.ndarray  # [K, 3] float64: x, y, v
    bbox: tuple[float, float, float, float]  # xywh
    bbox_source: str  # "file", "keypoints" (rebuilt) or "image" (whole image)
    area: float
    iscrowd: bool
    extra: dict = field(default_factory=dict)  # other fields of the json entry (e.g. "family")

    @property
    def visible(self) -> np.ndarray:
        """`[K]` bool: labelled (v > 0)."""
        return self.keypoints[:, 2] > 0

    @property
    def num_keypoints(self) -> int:
        return int(self.visible.sum())


def skeleton_to_zero_based(skeleton, num_keypoints: int) -> tuple[tuple[int, int], ...]:
    """0-based limbs. A skeleton that uses index 0 is 0-based already; otherwise it is 1-based (COCO)."""
    pairs = [tuple(int(i) for i in limb) for limb in skeleton or []]
    if not pairs:
        return ()
    flat = [i for limb in pairs for i in limb]
    offset = 0 if min(flat) == 0 else 1
    out = tuple((a - offset, b - offset) for a, b in pairs)
    if num_keypoints and max(max(limb) for limb in out) >= num_keypoints:
        raise ValueError(f"skeleton {skeleton} does not fit {num_keypoints} keypoints")
    return out


def clean_bbox(bbox, width: int, height: int) -> tuple[float, float, float, float] | None:
    """The box sanitised as mmpose / POMNet / CapeFormer do (clipped to the image, w-1/h-1 convention); None if empty."""
    x, y, w, h = bbox
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
    if x2 > x1 and y2 > y1:
        return (x1, y1, x2 - x1, y2 - y1)
    return None


_READ_FIELDS = {"id", "image_id", "category_id", "keypoints", "bbox", "area", "iscrowd", "segmentation"}


def _resolve(root: Path | None, file_name: str) -> Path | None:
    """The image on disk: root/file_name, else with leading folders dropped one by one (dataset prefixes)."""
    if root is None:
        return None
    parts = Path(file_name).parts
    for start in range(len(parts)):
        candidate = root.joinpath(*parts[start:])
        if candidate.is_file():
            return candidate
    return None


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) and value > 0


def _box_from(keypoints: np.ndarray, width, height) -> tuple[tuple[float, float, float, float], str]:
    labelled = keypoints[keypoints[:, 2] > 0, :2]
    if len(labelled):
        (x0, y0), (x1, y1) = labelled.min(0), labelled.max(0)
        if x1 > x0 and y1 > y0:
            return (float(x0), float(y0), float(x1 - x0), float(y1 - y0)), "keypoints"
    if width and height:
        return (0.0, 0.0, float(width), float(height)), "image"
    return (0.0, 0.0, 0.0, 0.0), "image"


class KeypointDataset:
    """A COCO keypoint file in memory. `images`, `categories` by id; `annotations` in file order."""

    def __init__(self, data: dict, image_root: str | Path | None = None, source: str | None = None):
        if not isinstance(data, dict) or "annotations" not in data or "images" not in data:
            raise ValueError(f"{source or 'data'} is not a COCO keypoint file (needs 'images' and 'annotations')")
        self.source = source
        info = data.get("info")
        # the file's own account of itself (KeypointWorld writes "KeypointWorld, 60 images, seed 424242")
        self.description = str(info.get("description") or "") if isinstance(info, dict) else ""
        self._where = "the file"
        try:
            self._read(data, None if image_root is None else Path(image_root))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            what = f"missing field {err}" if isinstance(err, KeyError) else str(err)
            raise ValueError(f"{source or 'data'}: malformed COCO keypoint file at {self._where}: {what}") from None

    def _read(self, data: dict, root: Path | None) -> None:
        for name in ("images", "annotations"):
            if not isinstance(data[name], list):
                raise TypeError(f"'{name}' must be a list, not {type(data[name]).__name__}")
        self.images: dict[int, ImageInfo] = {}
        for number, im in enumerate(data["images"]):
            self._where = f"images[{number}]"
            if not isinstance(im["file_name"], str):
                raise TypeError(f"file_name must be a string, not {im['file_name']!r}")
            width, height = im.get("width"), im.get("height")
            if width is not None and height is not None and not (_positive(width) and _positive(height)):
                raise ValueError(f"width and height must be positive numbers, not {width!r} x {height!r}")
            self.images[im["id"]] = ImageInfo(im["id"], im["file_name"], width, height, _resolve(root, im["file_name"]))
        self._where = "categories"
        raw_categories = {c["id"]: c for c in data.get("categories") or []}
        counts: dict[int, int] = {}
        self.annotations: list[Annotation] = []
        for number, ann in enumerate(data["annotations"]):
            self._where = f"annotations[{number}] (id {ann.get('id')})" if isinstance(ann, dict) else f"annotations[{number}]"
            category = raw_categories.get(ann.get("category_id"), {})
            names = category.get("keypoints") or []
            flat = ann.get("keypoints") or []
            if names and len(flat) != 3 * len(names) and f"keypoints_{len(names)}" in ann:
                flat = ann[f"keypoints_{len(names)}"]  # e.g. Human-Art's 21-keypoint field
            if len(flat) % 3:
                raise ValueError(f"annotation {ann.get('id')}: keypoints length {len(flat)} is not a multiple of 3")
            keypoints = np.asarray(flat, dtype=np.float64).reshape(-1, 3)
            counts.setdefault(ann["category_id"], len(keypoints))
            image = self.images.get(ann["image_id"])
            if image is None:
                raise ValueError(f"annotation {ann.get('id')} refers to a missing image {ann['image_id']}")
            box = ann.get("bbox")
            if box is not None and len(box) == 4 and float(box[2]) > 0 and float(box[3]) > 0:
                bbox, bbox_source = tuple(float(v) for v in box), "file"
                if not np.isfinite(bbox).all():
                    raise ValueError(f"bbox {box!r} is not finite")
                if image.width and image.height and (bbox[0] >= image.width or bbox[1] >= image.height
                                                     or bbox[0] + bbox[2] <= 0 or bbox[1] + bbox[3] <= 0):
                    raise ValueError(f"bbox {box!r} does not overlap its {image.width}x{image.height} image {ann['image_id']}")
            else:
                bbox, bbox_source = _box_from(keypoints, image.width, image.height)
            self.annotations.append(Annotation(
                id=ann.get("id", len(self.annotations)), image_id=ann["image_id"], category_id=ann["category_id"],
                keypoints=keypoints, bbox=bbox, bbox_source=bbox_source,
                area=float(ann.get("area", bbox[2] * bbox[3])), iscrowd=bool(ann.get("iscrowd", 0)),
                extra={k: v for k, v in ann.items() if k not in _READ_FIELDS}))
        self._where = "categories"
        self.categories: dict[int, Category] = {}
        for cid, c in raw_categories.items():
            count = counts.get(cid, len(c.get("keypoints") or []))
            names = list(c.get("keypoints") or [])
            if len(names) != count:
                names = [str(i) for i in range(count)]
            self.categories[cid] = Category(cid, c.get("name", str(cid)), tuple(names),
                                            skeleton_to_zero_based(c.get("skeleton"), count), c.get("supercategory"))
        for cid, count in counts.items():
            if cid not in self.categories:
                # A category used but not listed (e.g. Animal Kingdom's trimmed files): borrow the keypoint
                # definition of a listed category with the same keypoint count, else index names.
                twin = next((c for c in self.categories.values() if len(c.keypoint_names) == count), None)
                names = twin.keypoint_names if twin else tuple(str(i) for i in range(count))
                self.categories[cid] = Category(cid, str(cid), names, twin.skeleton if twin else ())
        self._by_id = {a.id: a for a in self.annotations}

    @classmethod
    def load(cls, path: str | Path, image_root: str | Path | None = None) -> "KeypointDataset":
        """Read a json file; images are looked up under `image_root` (default: the json's folder)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"annotation file not found: {path}") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid json: {err}") from None
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not a json text file (not UTF-8)") from None
        return cls(data, image_root if image_root is not None else path.parent, source=str(path))

    def annotation(self, ann_id: int) -> Annotation:
        return self._by_id[ann_id]

    def category_of(self, ann: Annotation) -> Category:
        return self.categories[ann.category_id]
