"""Decoding speed: naive per-keypoint `generate`, transformers' batched `generate`, and our engine.

    python -m benchmarks.decode_speed [--keypoints 1 5 17 68] [--new-tokens 20] [--repeats 3] [--json]
                                      [--size tiny|small|paper | --model PATH] [--device cpu] [--dtype float32]

All three decode the same K keypoint queries about one image (COCO 000000000785, GT box) greedily,
starting from the input embeddings, and the timings include all LM work (prefill and decoding):

    naive       one `language_model.generate` per keypoint over its full prompt (prefix + query)
    hf batched  one `generate` over the K full prompts, left-padded (what a user would write)
    engine      `kptllm.decoding.generation`: the image prefix once, K rows over it (constraints off, so tokens
                must equal; the `engine+grammar` column times the default constrained decoding). On a
                GPU this is the static-shape path replayed as CUDA graphs (kptllm/decoding/static_decode.py);
    eager       the engine with `static=False` (on a CPU the same as `engine`): the GPU's eager baseline

Prints a table (median of `--repeats`), the ratios naive/engine and hf/engine, and whether the three
produced the same tokens; `--json` prints {"rows": [{"keypoints", "ratio", "ratio_hf_batched",
"tokens_match", ...}]} instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.bench_batching import BBOX, COCO_KEYPOINTS, IMAGE, build_predictor  # noqa: E402
from kptllm.decoding.constraints import AnswerGrammar, grammar_for  # noqa: E402
from kptllm.decoding.generation import decode, prefill_prefixes  # noqa: E402
from kptllm.protocols.protocol import Task, build_conversation  # noqa: E402


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, repeats: int, device) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _strip(ids: list[int], eos: int, pad: int | None) -> list[int]:
    return ids[:ids.index(eos)] if eos in ids else ids


def prepare(predictor, keypoints: int):
    """Prefix embeds `[1, Lp, D]` of the example image and the K query suffixes `[L_k, D]` (text task)."""
    model, processor = predictor.model, predictor.processor
    predictor.set_image(IMAGE, BBOX)
    state = predictor.image_state
    ids = torch.tensor([processor.encode_prefix()], device=predictor.device)
    prefix = model.embed_inputs(ids, image_tokens=model.project_image(state.features))
    names = (COCO_KEYPOINTS * (keypoints // len(COCO_KEYPOINTS) + 1))[:keypoints]
    suffixes = []
    for name in names:
        query = processor.encode_conversation(build_conversation(Task.TEXT, text=name)).query_ids
        suffixes.append(model.embed_inputs(torch.tensor([query], device=predictor.device))[0])
    return prefix, suffixes


def naive(lm, prefix, suffixes, eos, pad, new_tokens):
    out = []
    for suffix in suffixes:
        full = torch.cat([prefix[0], suffix])[None]
        ids = lm.generate(inputs_embeds=full, attention_mask=torch.ones(full.shape[:2], dtype=torch.long, device=full.device),
                          max_new_tokens=new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=pad)
        out.append(_strip(ids[0].tolist(), eos, pad))
    return out


def hf_batched(lm, prefix, suffixes, eos, pad, new_tokens):
    fulls = [torch.cat([prefix[0], s]) for s in suffixes]
    width = max(f.shape[0] for f in fulls)
    block = prefix.new_zeros(len(fulls), width, prefix.shape[-1])
    mask = torch.zeros(len(fulls), width, dtype=torch.long, device=prefix.device)
    for row, full in enumerate(fulls):
        block[row, width - full.shape[0]:] = full
        mask[row, width - full.shape[0]:] = 1
    ids = lm.generate(inputs_embeds=block, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                      eos_token_id=eos, pad_token_id=pad)
    return [_strip(row, eos, pad) for row in ids.tolist()]


def engine(lm, prefix, suffixes, eos, new_tokens, grammar=None, static=None):
    prefixes = prefill_prefixes(lm, prefix)
    modes = None if grammar is None else [AnswerGrammar.start_mode(True)] * len(suffixes)
    return decode(lm, prefixes, suffixes, eos, new_tokens, grammar=grammar, start_modes=modes, static=static).token_ids


def run(keypoints=(1, 5, 17, 68), new_tokens: int = 20, repeats: int = 3, size: str = "tiny", model: str | None = None,
        device: str = "cpu", dtype=torch.float32, methods=("naive", "hf", "engine", "grammar"),
        merge_lora: bool = True) -> list[dict]:
    """One row per keypoint count: times (s), ratios naive/engine and hf/engine, token agreement."""
    if model is not None:
        from kptllm import KeypointPredictor

        predictor = KeypointPredictor.from_pretrained(model, device=device, dtype=dtype)
    else:
        predictor = build_predictor(size, device, dtype)
    if merge_lora:  # the same merged model for all methods (what KeypointPredictor.from_pretrained loads)
        from kptllm.inference import merge_lora as merge

        merge(predictor.model)
    lm, processor = predictor.model.language_model, predictor.processor
    eos, pad = processor.eos_token_id, processor.pad_token_id
    grammar = grammar_for(processor, lm.get_output_embeddings().weight.shape[0])
    rows = []
    with torch.no_grad():
        prefix, suffixes = prepare(predictor, 2)
        engine(lm, prefix, suffixes, eos, 2)  # warm-up (lazy initialisation, kernels)
        hf_batched(lm, prefix, suffixes, eos, pad, 2)
        for count in keypoints:
            prefix, suffixes = prepare(predictor, count)
            # first call at a new batch size: allocator / kernel warm-up; on a GPU also the CUDA-graph capture
            engine(lm, prefix, suffixes, eos, new_tokens if torch.device(device).type == "cuda" else 2)
            hf_batched(lm, prefix, suffixes, eos, pad, 2)
            row = {"keypoints": count}
            tokens = {}
            if "engine" in methods:
                row["engine_s"], tokens["engine"] = _timed(lambda: engine(lm, prefix, suffixes, eos, new_tokens), repeats, device)
            if "eager" in methods:
                row["engine_eager_s"], tokens["eager"] = _timed(
                    lambda: engine(lm, prefix, suffixes, eos, new_tokens, static=False), repeats, device)
            if "grammar" in methods:
                row["engine_grammar_s"], _ = _timed(lambda: engine(lm, prefix, suffixes, eos, new_tokens, grammar),
                                                    repeats, device)
            if "hf" in methods:
                row["hf_batched_s"], tokens["hf"] = _timed(lambda: hf_batched(lm, prefix, suffixes, eos, pad, new_tokens),
                                                           repeats, device)
            if "naive" in methods:
                row["naive_s"], tokens["naive"] = _timed(lambda: naive(lm, prefix, suffixes, eos, pad, new_tokens),
                                                         repeats, device)
            if "engine_s" in row:
                if "naive_s" in row:
                    row["ratio"] = row["naive_s"] / row["engine_s"]
                if "hf_batched_s" in row:
                    row["ratio_hf_batched"] = row["hf_batched_s"] / row["engine_s"]
            values = list(tokens.values())
            row["tokens_match"] = all(v == values[0] for v in values)
            # rows of each other method equal to the first's (in bf16 a random model's near-tied logits can
            # flip a token where reductions differ: how many rows does it touch?)
            row["rows_matching"] = min((sum(a == b for a, b in zip(v, values[0])) for v in values[1:]),
                                       default=len(values[0]) if values else 0)
            row["rows"] = len(values[0]) if values else 0
            row["tokens_match_naive"] = tokens.get("naive", tokens.get("engine")) == tokens.get("engine")
            row["tokens_match_hf_batched"] = tokens.get("hf", tokens.get("engine")) == tokens.get("engine")
            row["tokens_per_row"] = statistics.mean(len(t) for t in values[0]) if values else 0
            rows.append(row)
    return rows


def _describe(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keypoints", type=int, nargs="+", default=[1, 5, 17, 68])
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", choices=["tiny", "small", "paper"], default="tiny")
    parser.add_argument("--model", help="a saved checkpoint instead of a random --size model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--methods", nargs="+", default=["naive", "hf", "engine", "grammar"],
                        choices=["naive", "hf", "engine", "eager", "grammar"])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--keep-lora", action="store_true",
                        help="keep the LoRA adapters unmerged (default: merged, as from_pretrained loads a model)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args.keypoints, args.new_tokens, args.repeats, args.size, args.model, args.device,
               getattr(torch, args.dtype), args.methods, not args.keep_lora)
    if args.json:
        print(json.dumps({"rows": rows}))
        return
    print(f"model={args.model or args.size}{' (LoRA adapters kept)' if args.keep_lora else ' (LoRA merged)'} dtype={args.dtype} device={_describe(args.device)} torch={torch.__version__} "
          f"new_tokens={args.new_tokens} repeats={args.repeats}")
    cell = lambda row, key, fmt: format(row[key], fmt) if key in row else "-"  # noqa: E731
    print(f"{'K':>4}{'naive s':>10}{'hf batched s':>14}{'engine s':>10}{'eager s':>9}{'engine+grammar s':>18}"
          f"{'naive/engine':>14}{'hf/engine':>11}{'same tokens':>13}")
    for row in rows:
        print(f"{row['keypoints']:>4}{cell(row, 'naive_s', '.3f'):>10}{cell(row, 'hf_batched_s', '.3f'):>14}"
              f"{cell(row, 'engine_s', '.3f'):>10}{cell(row, 'engine_eager_s', '.3f'):>9}{cell(row, 'engine_grammar_s', '.3f'):>18}"
              f"{cell(row, 'ratio', '.1f'):>13}x{cell(row, 'ratio_hf_batched', '.2f'):>10}x{str(row['tokens_match']):>13}"
              + ("" if row["tokens_match"] else f" ({row['rows_matching']}/{row['rows']} rows)"))
    if torch.device(args.device).type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
