"""Training data throughput: KeypointWorld training items per second on this CPU (one loader process).

    python -m benchmarks.loader_speed [--config configs/keypointworld_continue.yaml] [--items 96]
                                      [--questions-per-keypoint 2]

GPU training of the embedded model is bounded by the loader (docs/BENCHMARKS.md), so items/s here is
what a GPU step waits for. Baseline, in the same process: instances found by rejection sampling (re-render
a mixed scene until the category appears, the loader before `render_scene(required=...)`).
"""

from __future__ import annotations

import argparse
import os
import time

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evaluation.data import keypointworld  # noqa: E402
from evaluation.training import data as training_data  # noqa: E402
from evaluation.training.data import Instance, KeypointWorldSource, TrainingMixture  # noqa: E402
from evaluation.training.model import build_model  # noqa: E402


class RejectionSource(KeypointWorldSource):
    """The previous loader: mixed scenes re-rendered until one holds the category."""

    def _instance(self, rng, category):
        scene = training_data.render_scene(rng, categories=[category] if rng.random() < 0.5 else None)
        objects = [o for o in scene.objects if o.category.name == category]
        if not objects:
            return None
        obj = objects[int(rng.integers(len(objects)))]
        cat = keypointworld.CATEGORIES[category]
        return Instance(scene.image, obj.bbox, obj.keypoints, cat.keypoints, cat.flip_pairs,
                        training_data.SUBJECTS.get(category))


def measure(processor, data: dict, source, items: int) -> dict:
    mixture = TrainingMixture(processor, [source], questions_per_image=data["questions_per_image"],
                              task_weights=data["tasks"], description_prob=data["description_prob"], flip_prob=0.0,
                              box_jitter=data["box_jitter"], max_shots=data["max_shots"],
                              questions_per_keypoint=int(data.get("questions_per_keypoint", 1)))
    renders = 0
    original = keypointworld.render_scene

    def counted(*args, **kwargs):
        nonlocal renders
        renders += 1
        return original(*args, **kwargs)

    training_data.render_scene = counted
    try:
        start = time.perf_counter()
        sequences = sum(len(mixture[i]) for i in range(items))
        seconds = time.perf_counter() - start
    finally:
        training_data.render_scene = original
    return {"items_per_s": items / seconds, "sequences_per_s": sequences / seconds, "renders_per_item": renders / items}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/keypointworld_continue.yaml")
    parser.add_argument("--items", type=int, default=96)
    parser.add_argument("--questions-per-keypoint", type=int, help="override the config's data.questions_per_keypoint")
    args = parser.parse_args()
    config = yaml.safe_load(open(args.config))
    if args.questions_per_keypoint:
        config["data"]["questions_per_keypoint"] = args.questions_per_keypoint
    if config["model"].get("type") == "checkpoint":
        from kptllm.processor import KptLLMProcessor

        processor = KptLLMProcessor.from_pretrained(config["model"]["path"])
    else:
        _, processor = build_model(config["model"], meta=True)  # the tokenizer only; no weights
    rows = {"rejection (before)": measure(processor, config["data"], RejectionSource(), args.items),
            "required category (now)": measure(processor, config["data"], KeypointWorldSource(), args.items)}
    print(f"{args.config}, questions_per_keypoint={config['data'].get('questions_per_keypoint', 1)}, "
          f"{args.items} items, one process")
    print(f"{'loader':<26}{'items/s':>9}{'sequences/s':>13}{'renders/item':>14}")
    for name, row in rows.items():
        print(f"{name:<26}{row['items_per_s']:>9.1f}{row['sequences_per_s']:>13.1f}{row['renders_per_item']:>14.2f}")
    before, now = rows.values()
    print(f"ratio {now['items_per_s'] / before['items_per_s']:.2f}x")


if __name__ == "__main__":
    main()
