"""Writes the visual-prompt support examples: one KeypointWorld drawing per category, all keypoints visible.

    python -m demo.make_examples        # -> assets/examples/keypointworld_support_*.jpg + keypointworld_supports.json

Seeds start at 700001 (never used by training, which draws item i from seed [0, i]).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evaluation.data.keypointworld import CATEGORIES, render_scene

OUT = Path(__file__).resolve().parents[1] / "assets" / "examples"


def main() -> None:
    meta = {}
    for name, category in CATEGORIES.items():
        seed = 700001
        while True:
            scene = render_scene(np.random.default_rng(seed), width=240, height=240, categories=[name], num_objects=1,
                                 min_size=0.6, max_size=0.75)
            obj = scene.objects[0]
            if (obj.keypoints[:, 2] == 2).all():
                break
            seed += 1
        file = f"keypointworld_support_{name}.jpg"
        scene.image.save(OUT / file, quality=95)
        meta[file] = {"category": name, "seed": seed, "bbox": [round(float(v), 1) for v in obj.bbox],
                      "keypoints": [[round(float(x), 1), round(float(y), 1)] for x, y, _ in obj.keypoints],
                      "names": list(category.keypoints)}
    (OUT / "keypointworld_supports.json").write_text(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
