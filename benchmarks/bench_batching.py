"""Batching benchmark: 17 keypoints in one `detect` call vs 17 single-keypoint calls, same image, same tokens.

    python -m benchmarks.bench_batching [--size tiny|small|paper] [--repeats 3] [--keypoints 17] [--device cpu]
                                        [--dtype float32|bfloat16]

Prints a table (median wall time of `--repeats` runs) and the ratio singles / batched. Both sides run the
same model on the same cached image and produce the same answers (checked), so the ratio is the
saving from decoding the keypoints as one batch over the shared image prefix.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

COCO_KEYPOINTS = ["nose", "left eye", "right eye", "left ear", "right ear", "left shoulder", "right shoulder",
                  "left elbow", "right elbow", "left wrist", "right wrist", "left hip", "right hip", "left knee",
                  "right knee", "left ankle", "right ankle"]
IMAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "examples",
                     "coco_000000000785.jpg")
BBOX = (280.79, 44.73, 218.7, 346.68)


SIZES = {
    # name: (vision config kwargs, Llama config kwargs, image size, prompt heads)
    "small": (dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
              dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                   num_key_value_heads=12), 224, 6),
    # the paper's KptLLM++: DINOv2-L/14 at 224 px + a Vicuna-7B-shaped Llama (random weights, bf16, GPU only)
    "paper": (dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
              dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                   num_key_value_heads=32), 224, 16),
}


def build_predictor(size: str, device: str, dtype=torch.float32):
    """A random-weight predictor: `tiny` (the test model) or one of SIZES, built directly on `device` in `dtype`."""
    from transformers import Dinov2Config, LlamaConfig

    from kptllm import KeypointPredictor, KptLLMConfig, KptLLMForKeypoints, KptLLMProcessor
    from kptllm.build import build_tiny, train_tiny_tokenizer

    if size == "tiny":
        model, processor = build_tiny(seed=0)
        return KeypointPredictor(model.to(device=device, dtype=dtype), processor, max_new_tokens=32)
    vision_kwargs, llm_kwargs, image_size, heads = SIZES[size]
    torch.manual_seed(0)
    tokenizer = train_tiny_tokenizer()  # a 600-token vocabulary; the paper's LLM has 32000 (only the LM head differs)
    config = KptLLMConfig(
        vision_config=Dinov2Config(patch_size=14, image_size=image_size, **vision_kwargs),
        text_config=LlamaConfig(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                                max_position_embeddings=4096, **llm_kwargs),
        image_size=image_size, prompt_extractor_heads=heads,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), kpt_token_id=tokenizer.convert_tokens_to_ids("<kpt>"))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = KptLLMForKeypoints(config)
    finally:
        torch.set_default_dtype(previous)
    return KeypointPredictor(model, KptLLMProcessor(tokenizer, config), max_new_tokens=32)


def _time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def run(size: str = "tiny", repeats: int = 3, keypoints: int = 17, device: str = "cpu", dtype=torch.float32) -> dict:
    """Time both ways; returns {"singles_s", "batched_s", "ratio", "set_image_s", ...}."""
    predictor = build_predictor(size, device, dtype)
    predictor.set_image(IMAGE, BBOX)
    set_image_s, _ = _time(lambda: predictor.set_image(IMAGE, BBOX), repeats)
    names = (COCO_KEYPOINTS * (keypoints // len(COCO_KEYPOINTS) + 1))[:keypoints]
    predictor.detect(names[:2])  # warm-up
    singles_s, singles = _time(lambda: [predictor.detect([n])[0] for n in names], repeats)
    batched_s, batched = _time(lambda: predictor.detect(names), repeats)
    same = [r.raw for r in singles] == [r.raw for r in batched]
    return {"size": size, "keypoints": keypoints, "singles_s": singles_s, "batched_s": batched_s,
            "ratio": singles_s / batched_s, "same_answers": same, "set_image_s": set_image_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", *SIZES], default="tiny")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keypoints", type=int, default=17)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    result = run(args.size, args.repeats, args.keypoints, args.device, getattr(torch, args.dtype))
    k = result["keypoints"]
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or platform.machine()
    print(f"model={result['size']} dtype={args.dtype} device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"set_image={result['set_image_s']:.3f}s")
    print(f"{'mode':<28}{'wall s':>10}{'ms/keypoint':>14}")
    print(f"{f'{k} calls x 1 keypoint':<28}{result['singles_s']:>10.3f}{1000 * result['singles_s'] / k:>14.1f}")
    print(f"{f'1 call x {k} keypoints':<28}{result['batched_s']:>10.3f}{1000 * result['batched_s'] / k:>14.1f}")
    print(f"ratio singles/batched: {result['ratio']:.2f}x   same answers: {result['same_answers']}")
    if args.device.startswith("cuda"):
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
