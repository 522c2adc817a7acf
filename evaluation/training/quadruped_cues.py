"""Why quadrupeds fail (issue 28): which picture cues the model uses to tell a quadruped's front legs from its back.

    python -m evaluation.training.quadruped_cues --model assets/kptllm-keypointworld --scenes 150

KeypointWorld draws a quadruped's front and back legs alike (same colours, widths, lengths and joint angles):
the only cues for "front" are the head at one end and the thin tail at the other. This renders held-out
scenes with one quadruped each, three ways from the same random stream (so pose, colours and placement are
identical): as drawn, with the head (neck, head, eyes, nose) left out, and with the tail left out. It asks
the model what each visible leg keypoint is (task (a), ground-truth box) and counts answers that name the
same leg part at the other end (shoulder <-> hip, elbow <-> knee, front paw <-> back paw, neck <-> root of
tail). If hiding the head raises those swaps, the model reads the head; what is left with the head in view
is the model's miss, not the world's.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from ..data import keypointworld as kw

SEED = 777_001  # held out: no training, validation, decision or test set uses it
# make_quadruped's drawing order (v1): far legs (2 shapes; v2 adds a thigh: 3), tail, body, neck line, head,
# nose, left eye, right eye, near legs
HEAD_SHAPES = (4, 5, 6, 7, 8)
TAIL_SHAPES = (2,)
FRONT = {"left shoulder", "right shoulder", "left elbow", "right elbow", "left front paw", "right front paw", "neck"}
SWAP = {"shoulder": "hip", "elbow": "knee", "front paw": "back paw", "neck": "root of tail"}
SWAP.update({v: k for k, v in SWAP.items()})


def _other_end(name: str) -> str:
    for part, other in SWAP.items():
        if name.endswith(part):
            return name[: len(name) - len(part)] + other
    return ""


def _quadruped_without(indices):
    """make_quadruped with the shapes at `indices` (v1 numbering) left out (same random draws: the same animal)."""
    def make(rng, version=1):  # make_object passes the version only when it is not 1
        spec = kw.make_quadruped(rng, version)
        shift = 0 if version < 2 else 1  # v2's far hind leg has a thigh: one more shape before the tail
        assert len(spec.shapes) == 11 + 2 * shift, "make_quadruped's drawing order changed: update HEAD_SHAPES / TAIL_SHAPES"
        spec.shapes = [s for k, s in enumerate(spec.shapes) if k - shift not in indices or k < 2]
        return spec
    return make


def scenes(count: int, variant: str, seed: int = SEED, version: int = 1):
    hidden = {"as drawn": (), "head hidden": HEAD_SHAPES, "tail hidden": TAIL_SHAPES}[variant]
    saved = kw.MAKERS["quadruped"]
    kw.MAKERS["quadruped"] = _quadruped_without(hidden) if hidden else saved
    try:
        return [kw.render_scene(np.random.default_rng([seed, i]), categories=["quadruped"], num_objects=1,
                                version=version) for i in range(count)]
    finally:
        kw.MAKERS["quadruped"] = saved


def ask(predictor, rendered) -> list[dict]:
    """One row per visible leg keypoint: expected, answered, object size (box's longer side, pixels)."""
    rows = []
    for scene in rendered:
        for obj in scene.objects:
            asked = [k for k, n in enumerate(obj.category.keypoints) if obj.keypoints[k, 2] >= 2 and _other_end(n)]
            predictor.set_image(scene.image, obj.bbox)
            crop = predictor.image_state.prepared.crop
            asked = [k for k in asked if crop.contains(obj.keypoints[k, :2])]
            if not asked:
                continue
            answers = predictor.describe([tuple(obj.keypoints[k, :2]) for k in asked])
            for k, answer in zip(asked, answers):
                rows.append({"expected": obj.category.keypoints[k], "answer": answer.text,
                             "size": max(obj.bbox[2], obj.bbox[3])})
    return rows


def summary(rows) -> dict:
    right = np.mean([r["answer"] == r["expected"] for r in rows])
    swapped = np.mean([r["answer"] == _other_end(r["expected"]) for r in rows])
    return {"keypoints": len(rows), "accuracy": round(float(right), 3), "front/back swapped": round(float(swapped), 3)}


def main(argv=None) -> None:
    from kptllm import KeypointPredictor

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="default: the embedded model")
    parser.add_argument("--scenes", type=int, default=150)
    parser.add_argument("--world-version", type=int, default=1)
    args = parser.parse_args(argv)
    predictor = KeypointPredictor.from_pretrained(args.model)
    report = {}
    for variant in ("as drawn", "head hidden", "tail hidden"):
        rows = ask(predictor, scenes(args.scenes, variant, version=args.world_version))
        report[variant] = summary(rows)
        if variant == "as drawn":  # does the crop's resolution matter? accuracy by object size
            sizes = np.array([r["size"] for r in rows])
            edges = np.quantile(sizes, [0, 1 / 3, 2 / 3, 1])
            report["as drawn, by object size (px)"] = {
                f"{lo:.0f}-{hi:.0f}": summary([r for r in rows if lo <= r["size"] <= hi]) for lo, hi in zip(edges, edges[1:])}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
