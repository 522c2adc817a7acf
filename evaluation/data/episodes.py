"""MP-100 episodes (POMNet / CapeFormer protocol) and AP-10K cross-species splits (CLAMP protocol).

Episodes reproduce the reference test sampler from the annotation file alone: the objects of each
category are collected in file order with the reference filters (non-crowd, a valid sanitised box, at
least one labelled keypoint), then, seeded once (`random.seed(1)` in the reference), every category in
file order draws `episodes` times `shots + queries` distinct objects with `random.sample`; the first
`shots` are the supports, the rest the queries.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from .coco import Annotation, KeypointDataset, clean_bbox


@dataclass(frozen=True)
class Episode:
    category_id: int
    support_ids: tuple[int, ...]  # annotation ids
    query_ids: tuple[int, ...]

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def cape_objects(dataset: KeypointDataset) -> dict[int, list[int]]:
    """Per category, the annotation ids usable in episodes, in the reference order (images in file order, then annotations)."""
    by_image: dict[int, list[Annotation]] = {}
    for ann in dataset.annotations:
        by_image.setdefault(ann.image_id, []).append(ann)
    objects: dict[int, list[int]] = {cid: [] for cid in dataset.categories}
    for image_id, image in dataset.images.items():
        for ann in by_image.get(image_id, []):
            if ann.iscrowd or ann.bbox_source != "file" or ann.area <= 0:
                continue
            if image.width is None or clean_bbox(ann.bbox, image.width, image.height) is None:
                continue
            if len(ann.keypoints) == 0 or ann.keypoints.max() == 0 or ann.extra.get("num_keypoints", 1) == 0:
                continue
            objects.setdefault(ann.category_id, []).append(ann.id)
    return objects


def make_episodes(dataset: KeypointDataset, shots: int, episodes: int = 200, queries: int = 15, seed: int = 1,
                  category_ids: list[int] | None = None) -> list[Episode]:
    """`episodes` episodes per category of `shots` supports + `queries` queries, deterministic for `seed`."""
    if shots < 1 or queries < 1 or episodes < 1:
        raise ValueError("shots, queries and episodes must be at least 1")
    objects = cape_objects(dataset)
    category_ids = list(dataset.categories) if category_ids is None else list(category_ids)
    rng = random.Random(seed)
    out = []
    for cid in category_ids:
        pool = objects.get(cid)
        if pool is None:
            raise ValueError(f"unknown category id {cid}")
        if len(pool) < shots + queries:
            raise ValueError(f"category {cid} has {len(pool)} usable instances; an episode needs {shots + queries}")
        for _ in range(episodes):
            drawn = rng.sample(pool, shots + queries)
            out.append(Episode(cid, tuple(drawn[:shots]), tuple(drawn[shots:])))
    return out


# --------------------------------------------------------------------------- AP-10K (CLAMP)
AP10K_SETTINGS = {
    # setting: (training family, test family); paper Sec. 4.1.1
    "different_order": ("Bovidae", "Canidae"),
    "same_order": ("Canidae", "Felidae"),
}


def ap10k_cross_species(dataset: KeypointDataset, setting: str, part: str) -> list[Annotation]:
    """The non-crowd annotations of the training (`part="train"`) or test family of a CLAMP setting.

    The family is the category's `supercategory` in AP-10K files (species are the categories).
    """
    if setting not in AP10K_SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; use one of {sorted(AP10K_SETTINGS)}")
    if part not in ("train", "test"):
        raise ValueError("part must be 'train' or 'test'")
    family = AP10K_SETTINGS[setting][0 if part == "train" else 1]
    wanted = {cid for cid, c in dataset.categories.items() if (c.supercategory or "").lower() == family.lower()}
    return [a for a in dataset.annotations if a.category_id in wanted and not a.iscrowd]
