"""What each MP-100 keypoint is called in the semantic-understanding task (task a).

MP-100's annotation file names the keypoints of 47 categories (animal bodies, birds, person, hand,
fly, locust, macaque) and numbers those of the other 53 ("0", "1", ...). The KptLLM++ paper asks about
keypoints with X-Pose's (UniKPT's) labels and leaves out ambiguous ones. X-Pose's label lists are under a
non-commercial licence, so they are not shipped here; a label set is a JSON file any user can supply:

    {"name": "my-labels-v1",
     "categories": {"klipspringer_face": ["right eye outer corner", ..., null, ...], ...}}

one entry per keypoint of the category in the file's order; `null` leaves a keypoint out (ambiguous).
Categories the set does not list keep the file's own names (read by `catalog.readable_name`:
`L_F_Paw` -> "left front paw"), and categories whose names are only numbers are left out.

The built-in set (`kptllm-mp100-v1`, `builtin()`) adds our own names for the 30 animal faces
(AnimalWeb's 9 landmarks, which MP-100 numbers 0-8). Their order was checked on the split-1 test
annotations (`tests/evaluation/test_semantic_labels.py`): points 0-3 run left to right across the
eyes in the image (0 < 1 < 2 < 3 in x for 73-98 % of the faces; the rest are profiles), 4 lies below
the eyes, 5 is left of 6, 7 above 8, and 4 above 7. Names are from the animal's point of view (its
right eye is on the image's left in a frontal face), as for every other MP-100 category. Clothes,
furniture, vehicles and the human face (23 categories) stay out: their landmark orders are
dataset-specific and we have no checked names for them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from kptllm.protocols import catalog

ANIMAL_FACE = ("right eye outer corner", "right eye inner corner", "left eye inner corner", "left eye outer corner",
               "nose tip", "right mouth corner", "left mouth corner", "upper lip", "lower lip")


@dataclass(frozen=True)
class SemanticLabels:
    """A named label set: per category, one label (or None: left out) per keypoint in the file's order."""

    name: str
    categories: dict[str, tuple[str | None, ...]] = field(default_factory=dict)
    sha256: str | None = None  # of the file it was read from; None for the built-in set

    def labels_for(self, category: str, file_names) -> list[str | None] | None:
        """Labels of `category`'s keypoints, or None when the category is left out (numbered, not listed)."""
        file_names = list(file_names)
        if category in self.categories:
            labels = list(self.categories[category])
            if len(labels) != len(file_names):
                raise ValueError(f"semantic labels {self.name!r}: {category} has {len(file_names)} keypoints in the "
                                 f"annotation file but {len(labels)} labels")
            return labels
        if all(str(n).strip().isdigit() for n in file_names):
            return None
        return [catalog.readable_name(n) for n in file_names]

    def describe(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "categories_listed": len(self.categories)}


def builtin() -> SemanticLabels:
    """`kptllm-mp100-v1`: the file's names plus our names for the 30 animal faces (see the module docstring)."""
    return SemanticLabels("kptllm-mp100-v1", {name: ANIMAL_FACE for name in catalog.mp100_categories()
                                              if catalog.mp100_category(name).supercategory == "animal_face"})


def load(path) -> SemanticLabels:
    """Read a label-set JSON file (format in the module docstring); clear errors for anything else."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except (OSError, ValueError) as err:
        raise ValueError(f"semantic labels {path}: cannot read a JSON file ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("categories"), dict):
        raise ValueError(f'semantic labels {path}: expected {{"name": ..., "categories": {{category: [labels]}}}}')
    categories = {}
    for category, labels in data["categories"].items():
        if not isinstance(labels, list) or not all(label is None or (isinstance(label, str) and label.strip())
                                                   for label in labels):
            raise ValueError(f"semantic labels {path}: {category} must map to a list of names or nulls")
        categories[str(category)] = tuple(None if label is None else " ".join(label.split()) for label in labels)
    name = str(data.get("name") or path.stem)
    return SemanticLabels(name, categories, hashlib.sha256(raw).hexdigest())
