"""Quick held-out check during and after training: KeypointWorld scenes from seeds training never uses.

    python -m evaluation.training.validate --model runs/kw/model --objects 40

Training draws item i from `default_rng([train_seed, i])`; this check draws scene i from
`default_rng([HELD_OUT_SEED, i])`: the validation set of `evaluation.data.keypointworld_sets`, the one set
that chooses checkpoints (how many objects: training's `validate_objects`). Metrics: PCK@0.2 of
max(w, h) of the object box for text- and visual-prompt detection (support = the same category in
another held-out scene), accuracy of the named keypoint for semantic understanding (visible keypoints:
an occluded one's pixel shows something else, as in the benchmark). Images are seen as the sets' files
hold them (JPEG 95, `keypointworld.as_file`; `--lossless` for the renders). The benchmark
of record is `kptllm eval --benchmark keypointworld`; this is its fast, dependency-free cousin.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from ..data.keypointworld import DEFAULT_VERSION, FILE_QUALITY, Scene, as_file, render_scene
from ..data.keypointworld import off_centre as off_centre_scene
from ..data.keypointworld_sets import VALIDATION

HELD_OUT_SEED = VALIDATION.seed  # the checkpoint-choosing seed (900001)


def held_out_objects(count: int, seed: int, version: int | None = None):
    found, i = [], 0
    while len(found) < count:
        scene = render_scene(np.random.default_rng([seed, i]), version=version or DEFAULT_VERSION)
        found += [(scene.image, obj) for obj in scene.objects]
        i += 1
    return found[:count]


def inside_keypoints(obj, crop) -> list[int]:
    """Indices of `obj`'s labelled keypoints that lie in the model `crop` (the ones a question can be about)."""
    return [k for k in range(len(obj.keypoints)) if obj.keypoints[k, 2] > 0 and crop.contains(obj.keypoints[k, :2])]


def off_centre(image, obj, rng, fill=None):
    """One object's copy by `keypointworld.off_centre`: (canvas, moved object).

    `fill`: the canvas colour; None = random. With the processor's fill colour (what the crop puts
    outside an image) the model sees pixel-identical crops, so any change in the answers is a frame bug.
    """
    moved = off_centre_scene(Scene(image, [obj]), rng, "random" if fill is None else fill)
    return moved.image, moved.objects[0]


def validate(predictor, objects: int = 40, seed: int = HELD_OUT_SEED, threshold: float = 0.2,
             shift: bool = False, neutral_canvas: bool = False, version: int | None = None,
             jpeg_quality: int | None = FILE_QUALITY) -> dict:
    """PCK (text, visual) and semantic accuracy over `objects` held-out objects.

    `shift`: the same objects, each pasted off-centre into a larger non-square canvas (a crop or
    inverse-map bug shows up as a drop against `shift=False`); `neutral_canvas` fills the canvas with
    the processor's fill colour, so only the frames change, not the pixels the model sees. `version`: the
    KeypointWorld version of the scenes (default `DEFAULT_VERSION`). `jpeg_quality`: each image (after any
    shift) as a set's file holds it, JPEG at this quality (`keypointworld.as_file`), so that validation sees what
    the decision and test files give; None: the lossless render (a frame check with `neutral_canvas` wants it:
    JPEG's 8 x 8 blocks fall elsewhere on a shifted canvas).
    """
    pool = held_out_objects(objects * 2, seed, version)
    if shift:
        rng = np.random.default_rng([seed, 1])
        fill = predictor.processor.fill if neutral_canvas else None
        pool = [off_centre(image, obj, rng, fill) for image, obj in pool]
    if jpeg_quality is not None:
        encoded = {}  # objects of one scene share its image (alive in `pool`, so ids are unique): encode it once

        def as_saved(image):
            if id(image) not in encoded:
                encoded[id(image)] = as_file(image, jpeg_quality)
            return encoded[id(image)]

        pool = [(as_saved(image), obj) for image, obj in pool]
    queries, supports = pool[:objects], pool[objects:]
    hits = {"text": [], "visual": [], "semantic": []}
    for n, (image, obj) in enumerate(queries):
        predictor.set_image(image, obj.bbox)
        crop = predictor.image_state.prepared.crop
        names = obj.category.keypoints
        norm = threshold * max(obj.bbox[2], obj.bbox[3])
        inside = inside_keypoints(obj, crop)
        if not inside:
            continue
        for result, k in zip(predictor.detect([names[k] for k in inside]), inside):
            ok = result.xy is not None and np.hypot(*(np.array(result.xy) - obj.keypoints[k, :2])) < norm
            hits["text"].append(bool(ok))
        seen = [k for k in inside if obj.keypoints[k, 2] >= 2]  # semantic questions: visible keypoints only
        for result, k in zip(predictor.describe([tuple(obj.keypoints[k, :2]) for k in seen]) if seen else [], seen):
            hits["semantic"].append(result.text == names[k])
        same = [s for s in supports if s[1].category.name == obj.category.name]
        if same:
            s_image, s_obj = same[n % len(same)]
            s_crop = predictor.processor.prepare_image(s_image, s_obj.bbox).crop
            both = [k for k in inside if s_obj.keypoints[k, 2] > 0 and s_crop.contains(s_obj.keypoints[k, :2])]
            if both:
                points = [tuple(s_obj.keypoints[k, :2]) for k in both]
                for result, k in zip(predictor.detect_from_example(s_image, points, support_bbox=s_obj.bbox), both):
                    ok = result.xy is not None and np.hypot(*(np.array(result.xy) - obj.keypoints[k, :2])) < norm
                    hits["visual"].append(bool(ok))
    return {f"{task}_{'accuracy' if task == 'semantic' else f'pck@{threshold}'}": (float(np.mean(v)) if v else None)
            for task, v in hits.items()} | {"keypoints": {t: len(v) for t, v in hits.items()}, "jpeg_quality": jpeg_quality}


def main(argv=None) -> None:
    from kptllm import KeypointPredictor

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--objects", type=int, default=40)
    parser.add_argument("--shift", action="store_true", help="objects off-centre in larger canvases")
    parser.add_argument("--world-version", type=int, help="KeypointWorld version (default: DEFAULT_VERSION)")
    parser.add_argument("--lossless", action="store_true",
                        help=f"the lossless renders (default: as the sets' files hold them, JPEG {FILE_QUALITY})")
    parser.add_argument("--device")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"])
    args = parser.parse_args(argv)
    import torch

    dtype = getattr(torch, args.dtype) if args.dtype else None
    predictor = KeypointPredictor.from_pretrained(args.model, device=args.device, dtype=dtype)
    print(json.dumps(validate(predictor, args.objects, shift=args.shift, version=args.world_version,
                              jpeg_quality=None if args.lossless else FILE_QUALITY)))


if __name__ == "__main__":
    main()
