"""Image augmentations shared by the keypoint model's and the detector's training, and their random streams.

Item i of a run draws its scene and questions from `default_rng([seed, i])`; an augmentation added later draws
from a stream of its own, `default_rng([seed, i, STREAM])`, so that a run without it sees exactly the items runs
made before it existed. (numpy seeds `[s, i]` and `[s, i, 0]` alike: 0 is never a stream.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

from ..data.keypointworld import as_file

CROWD_STREAM = 2  # the detector's crowded scenes (`detector.training_scene`)
JPEG_STREAM = 3  # JpegAugment, in both trainings


@dataclass(frozen=True)
class JpegAugment:
    """Images passed through JPEG with probability `prob`, at a quality drawn uniformly from `quality` (lo, hi).

    Rendered scenes are lossless in memory, but every file a set, a visitor or a camera gives is JPEG: at quality 95
    (the sets' files) the stage-16 model lost 0.016 / 0.008 / 0.029 (text / visual / semantic) on the validation
    scenes, and the stage-4 detector 0.055 AP (0.071 on the decision scenes: docs/BENCHMARKS.md, "What JPEG
    costs"). A config gives a mapping {prob, quality: [lo, hi]}; none (the default) leaves images alone."""

    prob: float = 0.0
    quality: tuple[int, int] = (75, 95)

    @classmethod
    def of(cls, spec) -> "JpegAugment":
        """From a config's mapping (or None, or a JpegAugment); ValueError names what is wrong."""
        if isinstance(spec, JpegAugment):
            return spec
        if spec is None:
            return cls()
        usage = f"jpeg takes a mapping {{prob: 0..1, quality: [lo, hi]}} with 1 <= lo <= hi <= 100, not {spec!r}"
        if not isinstance(spec, dict) or set(spec) - {"prob", "quality"}:
            raise ValueError(usage)
        prob, quality = spec.get("prob", 0.0), spec.get("quality", cls.quality)
        if (not isinstance(prob, (int, float)) or isinstance(prob, bool) or not isinstance(quality, (list, tuple))
                or len(quality) != 2 or not all(isinstance(q, int) and not isinstance(q, bool) for q in quality)):
            raise ValueError(usage)
        if not (0 <= prob <= 1 and math.isfinite(prob)) or not 1 <= quality[0] <= quality[1] <= 100:
            raise ValueError(usage)
        return cls(float(prob), (int(quality[0]), int(quality[1])))

    def __call__(self, image: Image.Image, rng) -> Image.Image:
        """`image`, or its JPEG copy; draws from `rng` only when `prob` > 0."""
        if self.prob <= 0 or rng.random() >= self.prob:
            return image
        return as_file(image, int(rng.integers(self.quality[0], self.quality[1] + 1)))
