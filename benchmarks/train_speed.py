"""Training step speed: one crop per question (before) vs each image encoded once (`image_index`, after).

    python -m benchmarks.train_speed [--config configs/keypointworld.yaml] [--images 4] [--repeats 3]

Builds the config's model (random init), draws `--images` KeypointWorld items (up to 8 questions each)
and times forward + backward of the same batch both ways, in this process. Prints a table and the ratio.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from evaluation.training.data import tokenizer_corpus
from evaluation.training.model import build_model
from evaluation.training.train import TrainConfig, build_mixture


def _time(model, batch, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        model(**batch).loss.backward()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/keypointworld.yaml")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    config = TrainConfig.load(args.config)
    model, processor = build_model(config.model, tokenizer_text=tokenizer_corpus())
    model.train()
    mixture = build_mixture(config, processor)
    shared = mixture.collate([mixture[i] for i in range(args.images)])
    per_row = {k: v for k, v in shared.items() if k != "image_index"}
    per_row["pixel_values"] = shared["pixel_values"][shared["image_index"]]
    if "support_pixel_values" in shared:
        per_row["support_pixel_values"] = shared["support_pixel_values"][shared["kpt_support_ids"]]
        per_row["kpt_support_ids"] = torch.arange(len(shared["kpt_points"]))
    before, after = _time(model, per_row, args.repeats), _time(model, shared, args.repeats)
    rows = shared["input_ids"].shape[0]
    result = {"sequences": rows, "images": args.images, "per_row_s": round(before, 4), "shared_s": round(after, 4),
              "ratio": round(before / after, 2)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{'variant':<28}{'fwd+bwd s':>10}{'sequences/s':>14}")
    print(f"{'one crop per question':<28}{before:>10.3f}{rows / before:>14.1f}")
    print(f"{'each image encoded once':<28}{after:>10.3f}{rows / after:>14.1f}")
    print(f"ratio {before / after:.2f}x  ({rows} sequences from {args.images} images, torch threads {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
