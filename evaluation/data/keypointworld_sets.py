"""The three KeypointWorld sets and their three jobs, defined here and nowhere else.

    from evaluation.data.keypointworld_sets import DECISION, TEST, VALIDATION, set_of
    TEST.write("/tmp/kw-test", offcentre=True)           # its files, rendered when missing (deterministic)
    set_of("KeypointWorld, 300 images, seed 271828")     # "test"; None for any other file

validation  seed 900001, as many scenes as the objects asked for need (training's `validate_objects`):
            **chooses a checkpoint** during training (`evaluation.training.validate`, every few hundred
            steps). Looked at all the time, so its numbers are optimistic for the checkpoint it chose.
decision    seed 424242, 300 images (523 objects), plain and off-centre: the records a candidate is compared
            with (`kptllm compare`) to **decide whether it ships**. Its first 60 images are the 60 scenes of
            the records before issue 28 (scene i is rendered from `default_rng([seed, i])`, whatever the n).
            Every shipment is decided on it, so its numbers are no longer a report.
test        seed 271828, 300 images (558 objects), plain and off-centre: **reports**. Scored once per shipped
            model, after the decision, and reported as it comes (model card, README, docs/BENCHMARKS.md, the
            dashboard, CI), with 95 % intervals (`evaluation.intervals`).

The rule: **the test set is never looked at before the decision.** No checkpoint is chosen, no stage
shipped, no setting tuned, no gallery of it read while a decision is open; a test-set number that
disappoints is reported, not fixed on the test set.

The sets cannot share a scene with each other or with training: scene i of a set comes from
`default_rng([seed, i])` (its off-centre copy from `[seed, i, 1]`); training draws item i from
`default_rng([train_seed, i])` (its crowding and JPEG from `[train_seed, i, 2]` and `[train_seed, i, 3]`,
`evaluation.training.augment`) with the configs' small train seeds (0-24 so far; the test checks 1-30) or
1,000,000-1,999,999 (gpu_run.sh); the box detector's training likewise. Different seeds, different streams
(tests/evaluation/test_keypointworld_sets.py checks the seeds and the rendered pixels).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from . import keypointworld
from .keypointworld import describe, parse_description, write_dataset


@dataclass(frozen=True)
class KeypointWorldSet:
    name: str
    seed: int
    images: int | None  # None: drawn scene by scene until enough objects (validation)
    job: str

    def description(self, offcentre: bool = False, version: int | None = None) -> str:
        """The annotation file's description (`keypointworld.describe`): what a record of this set keeps.
        `version`: the KeypointWorld version drawn (default `keypointworld.DEFAULT_VERSION`)."""
        if self.images is None:
            raise ValueError(f"the {self.name} set is drawn object by object; it has no files")
        return describe(self.images, self.seed, offcentre, _version(version))

    def write(self, out, offcentre: bool = False, version: int | None = None) -> Path:
        """`out/annotations.json` + `out/images/` of this set (off-centre copy with `offcentre`) as world
        `version` draws it, rendered unless `out` already holds exactly these files (same description);
        returns the annotation file."""
        path = Path(out) / "annotations.json"
        try:
            if json.loads(path.read_text())["info"]["description"] == self.description(offcentre, version):
                return path
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return write_dataset(out, self.images, self.seed, offcentre=offcentre, version=_version(version))

    def folder_name(self, offcentre: bool = False, version: int | None = None) -> str:
        """The files' folder name under a data root: `test`, `test-offcentre`, and `test-v2[-offcentre]` for a
        later world version (versions never share a folder, so neither re-renders over the other)."""
        version = _version(version)
        return self.name + (f"-v{version}" if version != 1 else "") + ("-offcentre" if offcentre else "")


def _version(version: int | None) -> int:
    """The world version asked for, or the current default (read when called: tests and a flip of the
    default take effect without re-importing this module)."""
    return keypointworld.DEFAULT_VERSION if version is None else int(version)


VALIDATION = KeypointWorldSet("validation", 900_001, None, "chooses a checkpoint during training")
DECISION = KeypointWorldSet("decision", 424_242, 300, "decides whether a candidate ships (kptllm compare)")
TEST = KeypointWorldSet("test", 271_828, 300, "reports a shipped model; never used to choose or decide")
SETS = {s.name: s for s in (VALIDATION, DECISION, TEST)}


def set_of(description) -> str | None:
    """The set an annotation file is, from its description (`info.description`, kept in records as
    `annotations_description`): a set's name when the file has the set's seed and its number of images (any
    number for validation, drawn object by object); None for any other file (the 60 images of seed 424242
    the records used before issue 28 are the decision set's first scenes, not the decision set)."""
    spec = parse_description(description)
    if spec is None:
        return None
    n, seed = spec[0], spec[1]  # later fields (off-centre, a world version) do not change the set
    for kw_set in SETS.values():
        if seed == kw_set.seed and kw_set.images in (None, n):
            return kw_set.name
    return None
