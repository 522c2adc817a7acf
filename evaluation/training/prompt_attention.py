"""Does the prompt feature extractor look where the prompt points? A training diagnostic.

    python -m evaluation.training.prompt_attention --model assets/kptllm-keypointworld [--objects 60] [--json]

Eq. 2 turns a keypoint prompt into a token by cross-attention from PE(point) to the support image's patch
tokens. For every labelled keypoint of held-out KeypointWorld objects (the crop around each object's
box, as `describe` makes it), this runs the prompt encoder and each cross-attention layer and reports,
per layer and head, where the attention goes:

- `distance`: median distance, in patches, from the point to the centre of the patch with the highest
  weight; `chance` is the same median for a patch drawn uniformly from the grid (what a head that
  ignores the point scores);
- `within_1`: share of points whose top patch centre lies within one patch of the point;
- `top_weight`: mean of the highest weight (1 = all on one patch, 1/N = uniform).

A head that localises has `distance` well under 1 and `within_1` near 1. The embedded model's heads sit
at chance (see its model card): its prompt tokens carry the point's position, not the local image.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from kptllm.position import grid_centres

from .validate import HELD_OUT_SEED, _objects


def localisation(weights: torch.Tensor, points: torch.Tensor, grid: tuple[int, int]) -> dict:
    """Statistics of attention maps `weights [heads, P, N]` (row-major `grid` = (rows, cols)) for prompt
    `points [P, 2]` (x, y) in the normalised crop frame. Distances are in patches (x in columns, y in rows)."""
    rows, cols = grid
    centres = grid_centres(rows, cols, device=weights.device)  # [N, 2] (x, y)
    scale = torch.tensor([cols, rows], dtype=torch.float32, device=weights.device)
    top = centres[weights.argmax(-1)]  # [heads, P, 2]
    distance = ((top - points[None]) * scale).norm(dim=-1)  # [heads, P]
    every = ((centres[None] - points[:, None]) * scale).norm(dim=-1)  # [P, N]
    return {"distance": distance.median(dim=1).values.tolist(),
            "within_1": (distance <= 1.0).float().mean(dim=1).tolist(),
            "top_weight": weights.max(-1).values.mean(dim=1).tolist(),
            "chance": float(every.median())}


@torch.no_grad()
def measure(predictor, objects: int = 60, seed: int = HELD_OUT_SEED) -> dict:
    """Per layer: the `localisation` statistics over all labelled keypoints inside their crops of `objects`
    held-out objects. Returns {"points": P, "chance": c, "layers": [{"distance": [per head], ...}, ...]}."""
    model = predictor.model
    extractor = model.prompt_feature_extractor
    maps, points = None, []
    for image, obj in _objects(objects, seed):
        predictor.set_image(image, obj.bbox)
        state = predictor._state()
        crop = state.prepared.crop
        inside = [k for k in range(len(obj.keypoints)) if obj.keypoints[k, 2] > 0 and crop.contains(obj.keypoints[k, :2])]
        if not inside:
            continue
        normalised = torch.tensor(np.stack([crop.to_crop(obj.keypoints[k, :2]) for k in inside]), dtype=torch.float32,
                                  device=predictor.device)
        layers = extractor.attention(model.prompt_encoder(normalised), state.features)
        maps = [m.float().cpu() for m in layers] if maps is None else [torch.cat([a, m.float().cpu()], 1)
                                                                      for a, m in zip(maps, layers)]
        points.append(normalised.cpu())
    if maps is None:
        raise ValueError("no labelled keypoint inside its crop")
    points = torch.cat(points)
    stats = [localisation(m, points, extractor.grid) for m in maps]
    return {"points": len(points), "chance": stats[0]["chance"],
            "layers": [{k: v for k, v in s.items() if k != "chance"} for s in stats]}


def format_table(result: dict) -> str:
    lines = [f"prompt-feature-extractor attention over {result['points']} keypoints "
             f"(a uniformly drawn patch: median distance {result['chance']:.2f} patches)",
             f"{'layer':>5} {'head':>4} {'distance':>9} {'within_1':>9} {'top_weight':>10}"]
    for number, layer in enumerate(result["layers"]):
        for head, (d, w, t) in enumerate(zip(layer["distance"], layer["within_1"], layer["top_weight"])):
            lines.append(f"{number:>5} {head:>4} {d:>9.2f} {w:>9.3f} {t:>10.3f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint folder (default: the embedded model)")
    parser.add_argument("--objects", type=int, default=60, help="held-out KeypointWorld objects (default 60)")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.objects < 1:
        parser.error("--objects must be at least 1")
    from kptllm import KeypointPredictor

    predictor = KeypointPredictor.from_pretrained(args.model, device=args.device)
    result = measure(predictor, args.objects, args.seed)
    print(json.dumps(result, indent=1) if args.json else format_table(result))


if __name__ == "__main__":
    main()
