"""The profiling script runs on the CPU path it will meet on a GPU (the static step), not only eagerly."""

from benchmarks.decode_profile import profile


def test_profile_splits_a_static_call_into_its_phases():
    result = profile(keypoints=3, new_tokens=4, repeats=3, static=True, top=3)
    assert 1 <= result["steps"] <= 4
    # measured times only: the derived phases are differences of wall-clock medians and may dip below 0 on
    # a busy machine
    for name in ("prefix_prefill_s", "one_token_call_s", "full_call_s", "step_alone_s"):
        assert result[name] > 0, (name, result)
    assert {"suffix_block_s", "per_step_s", "host_per_step_s"} <= set(result)
    assert len(result["top_ops"]) == 3 and all(row["calls"] >= 1 for row in result["top_ops"])
