"""Batched, prefetched and sharded evaluation give the records of one unit at a time in one process."""

import json

import numpy as np
import pytest

from evaluation.runner import run_benchmark
from tests.evaluation.test_runner import COCO_JSON, mp100_like  # noqa: F401 (fixture)
from tests.realdata import REAL

SAME = ("metrics", "counts", "per_category", "per_keypoint", "units", "chunks")


def _same(a, b, out_a, out_b):
    for key in SAME:
        assert a.get(key) == b.get(key), key
    assert json.loads((out_a / "predictions.json").read_text()) == json.loads((out_b / "predictions.json").read_text())


def _run(model, bench, annotations, out, **kwargs):
    return run_benchmark(str(model), bench, str(annotations), str(REAL / "coco"), str(out), progress=False, **kwargs)


def test_batched_coco_equals_one_unit_at_a_time(tiny_dir, tmp_path):
    one = _run(tiny_dir, "coco", COCO_JSON, tmp_path / "one", limit=6, chunk_size=2, batch=1)
    many = _run(tiny_dir, "coco", COCO_JSON, tmp_path / "many", limit=6, chunk_size=2, batch=4)
    _same(one, many, tmp_path / "one", tmp_path / "many")
    assert one["counts"]["unparsed"] == 0  # constrained decoding by default: every coordinate parses


@pytest.mark.parametrize("task", ["visual", "semantic"])
def test_batched_mp100_equals_one_unit_at_a_time(tiny_dir, tmp_path, mp100_like, task):  # noqa: F811
    kwargs = dict(task=task, shots=1, episodes=1, limit=6, chunk_size=4)
    one = _run(tiny_dir, "mp100", mp100_like, tmp_path / "one", batch=1, **kwargs)
    many = _run(tiny_dir, "mp100", mp100_like, tmp_path / "many", batch=5, **kwargs)
    _same(one, many, tmp_path / "one", tmp_path / "many")


def test_shards_merge_to_the_one_process_record(tiny_dir, tmp_path, monkeypatch):
    single = _run(tiny_dir, "coco", COCO_JSON, tmp_path / "single", limit=5, chunk_size=2, batch=2)
    assert _run(tiny_dir, "coco", COCO_JSON, tmp_path / "sharded", limit=5, chunk_size=2, batch=2, shard=(1, 2)) is None
    merged = _run(tiny_dir, "coco", COCO_JSON, tmp_path / "sharded", limit=5, chunk_size=2, batch=3, shard=(0, 2))
    _same(single, merged, tmp_path / "single", tmp_path / "sharded")
    # accelerate launch: ranks from the environment; rank 1 leaves, rank 0 waits for all chunks and scores
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert _run(tiny_dir, "coco", COCO_JSON, tmp_path / "launched", limit=5, chunk_size=2, batch=2) is None
    monkeypatch.setenv("RANK", "0")
    launched = _run(tiny_dir, "coco", COCO_JSON, tmp_path / "launched", limit=5, chunk_size=2, batch=2, wait_s=5)
    _same(single, launched, tmp_path / "single", tmp_path / "launched")


def test_unconstrained_runs_are_their_own_setting(tiny_dir, tmp_path):
    _run(tiny_dir, "coco", COCO_JSON, tmp_path, limit=2, chunk_size=2, batch=2, constrained=False)
    with pytest.raises(ValueError, match="other settings"):
        _run(tiny_dir, "coco", COCO_JSON, tmp_path, limit=2, chunk_size=2, batch=2)


@pytest.mark.parametrize("task", ["visual", "semantic"])
def test_batched_runner_through_the_static_decoder_equals_one_unit_at_a_time(tiny_dir, tmp_path, mp100_like,  # noqa: F811
                                                                              monkeypatch, task):
    """The GPU's default decoder (static shapes, dense rows per image, padding rows cut off), run eagerly
    here, gives the records of the eager engine one unit at a time; queries show different keypoint
    counts, so the images of a batch carry groups of different sizes."""
    from kptllm.decoding import static_decode

    kwargs = dict(task=task, shots=1, episodes=1, limit=6, chunk_size=4)
    one = _run(tiny_dir, "mp100", mp100_like, tmp_path / "one", batch=1, **kwargs)
    monkeypatch.setenv("KPTLLM_STATIC_DECODE", "1")
    calls = []
    original = static_decode.decode_static
    monkeypatch.setattr(static_decode, "decode_static", lambda *a, **k: calls.append(1) or original(*a, **k))
    many = _run(tiny_dir, "mp100", mp100_like, tmp_path / "many", batch=5, **kwargs)
    assert calls  # the static decoder was used
    # same answers; confidences only up to float rounding (its attention spans the padded row buffer)
    assert one["metrics"] == many["metrics"] and one["counts"] == many["counts"]
    chunks = [sorted((tmp_path / run / "chunks").glob("*.json")) for run in ("one", "many")]
    for path_one, path_many in zip(*chunks):
        for a, b in zip(json.loads(path_one.read_text())["predictions"], json.loads(path_many.read_text())["predictions"]):
            assert {k: v for k, v in a.items() if k != "keypoints"} == {k: v for k, v in b.items() if k != "keypoints"}
            if "keypoints" in a:
                rows_a, rows_b = np.asarray(a["keypoints"]), np.asarray(b["keypoints"])
                assert np.array_equal(rows_a[:, :2], rows_b[:, :2])
                assert np.allclose(rows_a[:, 2], rows_b[:, 2], rtol=1e-4, atol=1e-7)
