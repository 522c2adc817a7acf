"""Average the weights of two checkpoints of one model (a two-ingredient "model soup", WiSE-FT's interpolation).

    python -m evaluation.training.soup assets/kptllm-keypointworld /tmp/kw18 --weight 0.5 --out /tmp/soup50

Why: a fine-tuning stage can gain on most keypoints and lose a few its starting point knew (keypoint stage 18: the
decision records up 0.017-0.033, the car's front wheels down). Interpolating the two sets of weights, both from one
line of stages, often keeps both (Wortsman et al., "Robust fine-tuning of zero-shot models", 2022; "Model soups",
2022). Choose `--weight` on the validation set, then judge the soup as any stage: decision records and the demo's
examples.

OUT gets B's files (config, tokenizer, training curve) and weights (1 - weight) * A + weight * B, computed in
float32 and saved as B's are (float16 for the shipped model), plus `soup.json` naming both ingredients (their
paths and weight files' sha256) and the weight. Checkpoints of different architectures (config, parameter names or
shapes) are refused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import torch

from kptllm.modeling.model import KptLLMForKeypoints

ARCHITECTURE_KEYS_IGNORED = ("torch_dtype", "dtype", "transformers_version", "_name_or_path")


def _architecture(path: Path) -> dict:
    config = json.loads((path / "config.json").read_text())

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ARCHITECTURE_KEYS_IGNORED}
        return value

    return strip(config)


def _sha256(path: Path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def soup(a, b, weight: float, out) -> Path:
    """Write the soup of checkpoint folders `a` and `b` (module docstring) to `out`; returns `out`."""
    a, b, out = Path(a), Path(b), Path(out)
    if isinstance(weight, bool) or not 0.0 <= float(weight) <= 1.0:
        raise ValueError(f"--weight is B's share, in [0, 1], not {weight!r}")
    for path in (a, b):
        if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
            raise ValueError(f"{path} is not a saved model folder (config.json and model.safetensors)")
    if _architecture(a) != _architecture(b):
        raise ValueError(f"{a} and {b} are not the same architecture (their config.json differ)")
    if out.resolve() in (a.resolve(), b.resolve()):
        raise ValueError("--out must be a new folder, not one of the ingredients")
    first = KptLLMForKeypoints.from_pretrained(a, dtype=torch.float32).state_dict()
    model = KptLLMForKeypoints.from_pretrained(b, dtype=torch.float32)
    second = model.state_dict()
    if first.keys() != second.keys() or any(first[k].shape != second[k].shape for k in first):
        raise ValueError(f"{a} and {b} hold different parameters")
    mixed = {k: torch.lerp(first[k], second[k], float(weight)) if second[k].is_floating_point() else second[k]
             for k in second}
    model.load_state_dict(mixed)
    saved_dtype = _saved_dtype(b)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(b, out, ignore=shutil.ignore_patterns("model.safetensors", "soup.json"))
    model.to(saved_dtype).save_pretrained(out)
    (out / "soup.json").write_text(json.dumps({
        "a": str(a), "a_sha256": _sha256(a), "b": str(b), "b_sha256": _sha256(b), "weight_of_b": float(weight),
        "command": f"python -m evaluation.training.soup {a} {b} --weight {float(weight):g} --out {out}"}, indent=1))
    return out


def _saved_dtype(path: Path) -> torch.dtype:
    """The dtype of the first floating-point tensor in `path`/model.safetensors (the shipped model's: float16)."""
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        for key in f.keys():
            tensor = f.get_tensor(key)
            if tensor.is_floating_point():
                return tensor.dtype
    return torch.float32


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="a saved model folder (e.g. the shipped model)")
    parser.add_argument("b", help="another of the same architecture (e.g. a stage trained from A)")
    parser.add_argument("--weight", type=float, default=0.5, help="B's share of each weight (default 0.5)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        print(soup(args.a, args.b, args.weight, args.out))
    except ValueError as err:
        parser.exit(2, f"soup: {err}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
