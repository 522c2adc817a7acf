"""Exporting a run for shipping: float16 weights, the training curve, no load-time keys in the tokenizer config."""

import json

import torch

from evaluation.training.export import export
from kptllm.build import build_tiny
from kptllm.modeling import KptLLMForKeypoints


def test_export_halves_the_weights_and_drops_offline_loading_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, processor = build_tiny(seed=0)
    run = tmp_path / "run"
    model.save_pretrained(run / "model")
    processor.save_pretrained(run / "model")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    out = export(run, tmp_path / "out")
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert "local_files_only" not in config and "is_local" not in config
    assert (out / "metrics.jsonl").read_text() == '{"step": 1, "loss": 2.0}\n'
    shipped = KptLLMForKeypoints.from_pretrained(out, dtype=torch.float32)
    for (name, mine), theirs in zip(model.state_dict().items(), shipped.state_dict().values()):
        assert torch.equal(mine.half().float(), theirs), name
