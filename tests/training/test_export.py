"""Exporting a run for shipping: float16 weights, the training curve, no load-time keys in the tokenizer config."""

import json
from pathlib import Path

import torch

from evaluation.training.export import export
from kptllm.build import build_tiny
from kptllm.modeling.model import KptLLMForKeypoints


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
    export(run, tmp_path / "out")  # again, into the same folder: the curve is not doubled
    assert (out / "metrics.jsonl").read_text() == '{"step": 1, "loss": 2.0}\n'
    shipped = KptLLMForKeypoints.from_pretrained(out, dtype=torch.float32)
    for (name, mine), theirs in zip(model.state_dict().items(), shipped.state_dict().values()):
        assert torch.equal(mine.half().float(), theirs), name


def test_stages_join_into_one_curve(tmp_path):
    """The shipped curve (stages 1-5) + a new run's metrics: the new rows become stage 6 and continue the
    steps and seconds."""
    from evaluation.training.export import join_stages

    shipped = Path(__file__).resolve().parents[2] / "assets" / "kptllm-keypointworld" / "metrics.jsonl"
    last = json.loads(shipped.read_text().splitlines()[-1])
    new = tmp_path / "metrics.jsonl"
    new.write_text('{"step": 10, "loss": 0.5, "elapsed": 3.0}\n{"step": 20, "loss": 0.4, "elapsed": 6.5}\n')
    rows = join_stages([shipped, new])
    assert rows[:-2] == [json.loads(line) for line in shipped.read_text().splitlines()]
    assert rows[-2:] == [{"step": last["step"] + 10, "loss": 0.5, "elapsed": round(last["elapsed"] + 3.0, 2), "stage": last["stage"] + 1},
                         {"step": last["step"] + 20, "loss": 0.4, "elapsed": round(last["elapsed"] + 6.5, 2), "stage": last["stage"] + 1}]
    assert join_stages([new]) == [json.loads(line) for line in new.read_text().splitlines()]  # one file: as it is


def test_the_detector_exports_with_its_stages_joined(tmp_path):
    """`export --detector --metrics SHIPPED NEW`: the curve of every stage (it was the new run's alone), weights that
    load and answer; without --metrics the run's own curve."""
    import torch

    from evaluation.training.detector import DetectorSpec, build_detector
    from evaluation.training.export import main as export_main
    from kptllm.detection import ClosedSetDetector

    torch.manual_seed(0)
    run = tmp_path / "run"
    build_detector(DetectorSpec(image_size=64, embedding_size=8, hidden_sizes=[8, 16, 16, 32], d_model=16, ffn_dim=32,
                                heads=2, decoder_layers=1, num_queries=10, num_denoising=4)).save_pretrained(run / "best")
    (run / "metrics.jsonl").write_text('{"step": 5, "loss": 9.0, "elapsed": 2.0}\n')
    shipped = tmp_path / "shipped.jsonl"
    shipped.write_text('{"step": 100, "loss": 10.0, "elapsed": 50.0, "stage": 1}\n')
    export_main(["--detector", "--run", str(run), "--out", str(tmp_path / "joined"), "--metrics", str(shipped),
                 str(run / "metrics.jsonl")])
    rows = [json.loads(line) for line in (tmp_path / "joined" / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"step": 100, "loss": 10.0, "elapsed": 50.0, "stage": 1},
                    {"step": 105, "loss": 9.0, "elapsed": 52.0, "stage": 2}]
    assert ClosedSetDetector.from_pretrained(tmp_path / "joined").categories[0] == "person"
    export_main(["--detector", "--run", str(run), "--out", str(tmp_path / "alone")])
    assert (tmp_path / "alone" / "metrics.jsonl").read_text() == '{"step": 5, "loss": 9.0, "elapsed": 2.0}\n'


def test_a_missing_stage_curve_is_refused_before_anything_is_written(tmp_path, capsys):
    """`--metrics` with a mistyped path used to drop that stage from the joined curve without a word: now the export
    stops (exit 2, the path named) and writes nothing, for the model and the detector alike."""
    import pytest

    from evaluation.training.export import main as export_main

    (tmp_path / "there.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    for flags in ([], ["--detector"]):
        out = tmp_path / ("out" + "".join(flags))
        with pytest.raises(SystemExit) as stop:
            export_main([*flags, "--run", str(tmp_path / "no-run"), "--out", str(out),
                         "--metrics", str(tmp_path / "there.jsonl"), str(tmp_path / "typo.jsonl")])
        assert stop.value.code == 2
        assert "typo.jsonl" in capsys.readouterr().err
        assert not out.exists()
