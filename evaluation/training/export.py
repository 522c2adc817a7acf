"""Export a trained model for shipping: weights in float16 (half the size), tokenizer, training curve.

    python -m evaluation.training.export --run runs/keypointworld --out assets/kptllm-keypointworld

Copies `RUN/model` (weights cast to `--dtype`), `RUN/metrics.jsonl` (the training curve the dashboard
draws) and `RUN/loss.png` when present. The model card (`README.md`) is written by hand.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from kptllm.modeling import KptLLMForKeypoints
from kptllm.processor import KptLLMProcessor


def export(run, out, dtype: str = "float16", metrics=None) -> Path:
    run, out = Path(run), Path(out)
    model_dir = run / "model" if (run / "model" / "config.json").is_file() else run
    model = KptLLMForKeypoints.from_pretrained(model_dir, dtype=torch.float32)
    processor = KptLLMProcessor.from_pretrained(model_dir, config=model.config)
    out.mkdir(parents=True, exist_ok=True)
    model.to(getattr(torch, dtype)).save_pretrained(out)
    processor.save_pretrained(out)
    _drop_load_time_keys(out / "tokenizer_config.json")
    for name in ("metrics.jsonl", "loss.png"):
        for source in ([Path(m) for m in metrics] if metrics and name == "metrics.jsonl" else [run / name]):
            if source.is_file():
                with (out / name).open("ab" if name == "metrics.jsonl" else "wb") as f:
                    f.write(source.read_bytes())
    return out


def _drop_load_time_keys(path: Path) -> None:
    """The tokenizer saves how it was loaded (`local_files_only` is true in an offline run): a shipped
    checkpoint must not tell its users' loaders to stay offline."""
    if path.is_file():
        config = json.loads(path.read_text())
        if {"local_files_only", "is_local"} & set(config):
            for key in ("local_files_only", "is_local"):
                config.pop(key, None)
            path.write_text(json.dumps(config, indent=2) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a training run folder (or a model folder)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--metrics", nargs="*", help="metrics.jsonl files to concatenate (stages of one training)")
    args = parser.parse_args(argv)
    print(export(args.run, args.out, args.dtype, args.metrics))


if __name__ == "__main__":
    main()
