"""Where one engine call's time goes: prefix prefill, suffix block, decode steps, and the step's own cost.

    python -m benchmarks.decode_profile [--size paper --device cuda --dtype bfloat16] [--keypoints 17] [--json]

The engine call of `benchmarks/decode_speed.py` (K text queries about one image, greedy, `--new-tokens`
answer tokens, grammar off) split by differences of timed calls, each the median of `--repeats`:

    prefix prefill   `prefill_prefixes` alone (the image + system prompt, one sequence)
    suffix block     decode with 1 new token, minus the prefill: the K instructions prefilled as one block
                     against the shared prefix, plus choosing the first token
    per step         (full call - 1-token call) / (steps - 1): one more answer token for all K rows
    step alone       the static state's `step()` replayed back to back (on a GPU: the CUDA graph alone,
                     no token choice, no host sync): what a step costs the device
    host per step    per step - step alone: token choice, the finished-rows check and its host sync

On a GPU the static path (CUDA graphs) is what `decode` takes; `--static 0` profiles the eager engine
(`step alone` is then not measured). Then the top operators of one full call from `torch.profiler`
(device time on a GPU, CPU time otherwise) and the kernel count per call. Nothing is downloaded: random
weights of the chosen size.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.bench_batching import build_predictor  # noqa: E402
from benchmarks.decode_speed import _describe, _sync, _timed, prepare  # noqa: E402
from kptllm.decoding.generation import decode, prefill_prefixes  # noqa: E402


def _median_s(fn, repeats: int, device) -> float:
    return _timed(fn, repeats, device)[0]


def profile(size: str = "tiny", device: str = "cpu", dtype=torch.float32, keypoints: int = 17, new_tokens: int = 20,
            repeats: int = 5, static: bool | None = None, top: int = 12) -> dict:
    """The phase table (seconds) and the profiler's top operators; see the module docstring."""
    from kptllm.decoding import static_decode
    from kptllm.inference import merge_lora

    predictor = build_predictor(size, device, dtype)
    merge_lora(predictor.model)
    lm, processor = predictor.model.language_model, predictor.processor
    eos = processor.eos_token_id
    with torch.no_grad():
        prefix, suffixes = prepare(predictor, keypoints)

        def call(tokens):
            return decode(lm, prefill_prefixes(lm, prefix), suffixes, eos, tokens, static=static)

        for tokens in (1, new_tokens):  # warm-up: allocations, kernel choice, graph capture per shape
            call(tokens)
            call(tokens)
        steps = _steps(call(new_tokens), new_tokens)
        phases = {"prefix_prefill_s": _median_s(lambda: prefill_prefixes(lm, prefix), repeats, device),
                  "one_token_call_s": _median_s(lambda: call(1), repeats, device),
                  "full_call_s": _median_s(lambda: call(new_tokens), repeats, device)}
        phases["suffix_block_s"] = phases["one_token_call_s"] - phases["prefix_prefill_s"]
        phases["per_step_s"] = (phases["full_call_s"] - phases["one_token_call_s"]) / max(steps - 1, 1)
        state = _latest_state(static_decode, lm)
        if state is not None and (static is None and static_decode.static_enabled(device) or static):
            _replay(state, lm, 1)  # the buffers hold the last call's state: replaying it re-writes the same column
            phases["step_alone_s"] = _median_s(lambda: _replay(state, lm, 10), repeats, device) / 10
            phases["host_per_step_s"] = phases["per_step_s"] - phases["step_alone_s"]
        table, kernels = _top_ops(lambda: call(new_tokens), device, top)
    return {"size": size, "device": _describe(device), "dtype": str(dtype).replace("torch.", ""),
            "keypoints": keypoints, "steps": steps, "static": static, **phases, "top_ops": table,
            "kernels_per_call": kernels}


def _steps(generated, new_tokens: int) -> int:
    """Decode steps the call ran: until its last row's EOS (counted), at most `new_tokens`."""
    return min(new_tokens, max(len(ids) + done for ids, done in zip(generated.token_ids, generated.finished)))


def _replay(state, lm, count: int) -> None:
    """`count` static steps back to back, set up as `decode_static` sets them up (attention, written column)."""
    from kptllm.modeling.shared_prefix import ATTENTION_NAME, use_attention

    with use_attention(lm, ATTENTION_NAME):
        state.rows.static_column = state.column
        try:
            for _ in range(count):
                state.step()
        finally:
            state.rows.static_column = None


def _latest_state(static_decode, lm):
    states = static_decode._states.get(lm)
    return next(reversed(states.values())) if states else None


def _top_ops(fn, device, top: int) -> tuple[list[dict], int | None]:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    cuda = torch.device(device).type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof:
        fn()
        _sync(device)
    events = prof.key_averages()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    rows = sorted(events, key=lambda e: getattr(e, key, 0.0), reverse=True)[:top]
    table = [{"op": e.key, "calls": e.count, "self_ms": getattr(e, key, 0.0) / 1e3} for e in rows]
    kernels = None
    if cuda:
        kernels = sum(e.count for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA)
    return table, kernels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "small", "paper"], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--keypoints", type=int, default=17)
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--static", type=int, choices=[0, 1], help="force the static path on (1) or off (0)")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = profile(args.size, args.device, getattr(torch, args.dtype), args.keypoints, args.new_tokens, args.repeats,
                     None if args.static is None else bool(args.static), args.top)
    if args.json:
        print(json.dumps(result))
        return
    print(f"model={args.size} dtype={result['dtype']} device={result['device']} torch={torch.__version__} "
          f"keypoints={args.keypoints} steps={result['steps']} static={'auto' if args.static is None else args.static}")
    for name in ("prefix_prefill_s", "suffix_block_s", "per_step_s", "step_alone_s", "host_per_step_s", "full_call_s"):
        if name in result:
            print(f"  {name[:-2].replace('_', ' '):<16}{result[name] * 1e3:>10.2f} ms")
    if result["kernels_per_call"] is not None:
        print(f"  kernels per call {result['kernels_per_call']}")
    print(f"top operators ({'device' if args.device.startswith('cuda') else 'CPU'} self time of one full call):")
    for row in result["top_ops"]:
        print(f"  {row['self_ms']:>9.2f} ms {row['calls']:>6}x  {row['op'][:80]}")


if __name__ == "__main__":
    main()
