"""Training step speed: one crop per question (before) vs each image encoded once (`image_index`, after).

    python -m benchmarks.train_speed [--config configs/keypointworld.yaml] [--images 4] [--repeats 3]
                                     [--device cuda --bf16] [--profile]

Builds the config's model, draws `--images` KeypointWorld items (the config's questions per image) and
times forward + backward of the same batch both ways, in this process. Prints a table and the ratio.
On a GPU (`--device cuda --bf16`, autocast as in training) this is the device's share of a training step:
compared with a run's steps/s it tells whether the GPU or the loop around it (loader, host) is the bound;
`--profile` adds the top operators of one shared-prefix step with the config's `train.length_buckets`
(rows in groups of similar length; the fastest way, what training runs).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import time

import torch

from evaluation.training.data import tokenizer_corpus
from evaluation.training.model import build_model
from benchmarks.decode_profile import _top_ops
from benchmarks.decode_speed import _sync
from evaluation.training.train import TrainConfig, build_mixture


def _step(model, batch, autocast) -> None:
    model.zero_grad(set_to_none=True)
    with autocast():
        loss = model(**batch).loss
    loss.backward()


def _time(model, batch, repeats: int, autocast=contextlib.nullcontext, device="cpu") -> float:
    best = float("inf")
    _step(model, batch, autocast)  # warm-up (allocator, kernel choice)
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        _step(model, batch, autocast)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/keypointworld.yaml")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast, as `--mixed-precision bf16` trains")
    parser.add_argument("--profile", action="store_true", help="top operators of one shared-crop step")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    config = TrainConfig.load(args.config)
    model, processor = build_model(config.model, tokenizer_text=tokenizer_corpus())
    model.to(args.device).train()
    device_type = torch.device(args.device).type
    autocast = functools.partial(torch.autocast, device_type, dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext
    mixture = build_mixture(config, processor)
    shared = mixture.collate([mixture[i] for i in range(args.images)])
    per_row = {k: v for k, v in shared.items() if k != "image_index"}
    per_row["pixel_values"] = shared["pixel_values"][shared["image_index"]]
    if "support_pixel_values" in shared:
        per_row["support_pixel_values"] = shared["support_pixel_values"][shared["kpt_support_ids"]]
        per_row["kpt_support_ids"] = torch.arange(len(shared["kpt_points"]))
    shared = {k: v.to(args.device) for k, v in shared.items()}
    per_row = {k: v.to(args.device) for k, v in per_row.items()}
    before = _time(model, per_row, args.repeats, autocast, args.device)
    after = _time(model, shared, args.repeats, autocast, args.device)
    prefixed = dict(shared, shared_prefix_length=len(processor.encode_prefix()), length_buckets=1)
    prefix_s = _time(model, prefixed, args.repeats, autocast, args.device)
    bucketed = dict(prefixed, length_buckets=config.train.length_buckets)
    bucket_s = _time(model, bucketed, args.repeats, autocast, args.device)
    rows = shared["input_ids"].shape[0]
    result = {"sequences": rows, "images": args.images, "per_row_s": round(before, 4), "shared_s": round(after, 4),
              "ratio": round(before / after, 2), "shared_prefix_s": round(prefix_s, 4),
              "ratio_shared_prefix": round(after / prefix_s, 2), "length_buckets": config.train.length_buckets,
              "bucketed_s": round(bucket_s, 4), "ratio_bucketed": round(prefix_s / bucket_s, 2),
              "tokens_per_sequence": shared["input_ids"].shape[1]}
    if args.profile:
        result["top_ops"], result["kernels"] = _top_ops(lambda: _step(model, bucketed, autocast), args.device, 15)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{'variant':<28}{'fwd+bwd s':>10}{'sequences/s':>14}")
    print(f"{'one crop per question':<28}{before:>10.3f}{rows / before:>14.1f}")
    print(f"{'each image encoded once':<28}{after:>10.3f}{rows / after:>14.1f}")
    print(f"{'+ prefix once per image':<28}{prefix_s:>10.3f}{rows / prefix_s:>14.1f}   ({after / prefix_s:.2f}x over the line above)")
    label = f"+ {config.train.length_buckets} length buckets"
    print(f"{label:<28}{bucket_s:>10.3f}{rows / bucket_s:>14.1f}   ({prefix_s / bucket_s:.2f}x over the line above)")
    print(f"ratio {before / after:.2f}x  ({rows} sequences of {result['tokens_per_sequence']} tokens from {args.images} images, "
          f"device {args.device}, bf16 {args.bf16}, torch threads {torch.get_num_threads()})")
    if args.profile:
        print(f"top operators of one shared-prefix step ({result['kernels'] or '-'} kernels):")
        for row in result["top_ops"]:
            print(f"  {row['self_ms']:>9.2f} ms {row['calls']:>6}x  {row['op'][:80]}")


if __name__ == "__main__":
    main()
