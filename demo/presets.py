"""Keypoint presets for the text and visual prompt tabs: the catalog's datasets and KeypointWorld's categories."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from evaluation.data.keypointworld import CATEGORIES
from kptllm.protocols import catalog
from kptllm.protocols.catalog import describe_keypoint


@dataclass(frozen=True)
class Preset:
    label: str
    names: tuple[str, ...]
    descriptions: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]


_CATALOG = [("coco", "COCO person"), ("ap10k", "AP-10K animal"), ("carfusion", "CarFusion car"),
            ("animalpose", "AnimalPose animal"), ("macaque", "MacaquePose monkey"),
            ("animal_kingdom", "Animal Kingdom animal"), ("humanart21", "Human-Art person")]


@lru_cache(maxsize=1)
def presets() -> dict[str, Preset]:
    out: dict[str, Preset] = {}
    for name, category in CATEGORIES.items():
        subject = {"quadruped": "animal"}.get(name, name)
        label = f"KeypointWorld {name} ({len(category.keypoints)})"
        out[label] = Preset(label, tuple(category.keypoints),
                            tuple(describe_keypoint(k, subject) for k in category.keypoints),
                            tuple(tuple(e) for e in category.skeleton))
    for key, title in _CATALOG:
        kset = catalog.get(key)
        label = f"{title} ({kset.num_keypoints})"
        out[label] = Preset(label, kset.names, kset.descriptions, kset.skeleton)
    return out


def skeleton_for(names: list[str]) -> tuple[tuple[int, int], ...]:
    """Skeleton edges (0-based, into `names`) of the first preset that holds every edge's two names."""
    wanted = [n.strip().lower() for n in names]
    best: tuple[tuple[int, int], ...] = ()
    for preset in presets().values():
        lookup = {n.lower(): k for k, n in enumerate(preset.names)}
        lookup.update({d.lower(): k for k, d in enumerate(preset.descriptions)})
        index = [lookup.get(n) for n in wanted]
        if sum(i is not None for i in index) < 2:
            continue
        where = {i: pos for pos, i in enumerate(index) if i is not None}
        edges = tuple((where[a], where[b]) for a, b in preset.skeleton if a in where and b in where)
        if len(edges) > len(best):
            best = edges
    return best


def preset_used(label: str | None, names: list[str]) -> str | None:
    """`label` when `names` are that preset's keypoints (its names or its descriptions, in its order, or a
    subset of them), else None: names typed over a preset are a custom category, not the preset."""
    preset = presets().get(label or "")
    if preset is None or not names:
        return None
    known = {n.lower() for n in preset.names} | {d.lower() for d in preset.descriptions}
    return label if all(n.strip().lower() in known for n in names) else None


def category_of(label: str | None) -> str | None:
    """The category a preset names ('COCO person (17)' -> 'COCO person'); None without a preset."""
    return label.rsplit(" (", 1)[0] if label else None
