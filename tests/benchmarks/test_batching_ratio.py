"""The batching benchmark runs and shows a real saving (generous margin; the figures live in docs/BENCHMARKS.md)."""

from benchmarks.bench_batching import run


def test_seventeen_keypoints_in_one_call_cost_far_less_than_seventeen_calls():
    result = run(size="tiny", repeats=1, keypoints=17)
    assert result["same_answers"]
    assert result["ratio"] > 3.0, result  # measured ~10x on 2 CPU cores
