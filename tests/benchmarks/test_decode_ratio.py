"""The decoding engine beats naive per-keypoint `generate` and batched `generate` (ratios with generous margins)."""

from benchmarks.decode_speed import run


def test_engine_ratio_over_naive_and_batched_generate():
    (row,) = run(keypoints=(17,), new_tokens=12, repeats=3, methods=("naive", "hf", "engine"))  # best of 3
    assert row["tokens_match"], row
    assert row["ratio"] > 3.0, row  # measured ~10x on 2 CPU cores (docs/BENCHMARKS.md)
    # measured 1.4-2.7x; a loaded machine squeezes it, so the test only asks that the engine is not slower
    assert row["ratio_hf_batched"] > 0.9, row
