"""Training: loss goes down, resume continues the same curve, two CPU processes stay in sync."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evaluation.cli import main
from evaluation.training.data import TrainingMixture, KeypointWorldSource, tokenizer_corpus
from evaluation.training.model import build_model
from evaluation.training.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[2]
TINY = """
model:
  type: scratch
  tokenizer_vocab: 700
  vision: {model_type: dinov2, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64, patch_size: 16, image_size: 64}
  llm: {model_type: llama, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 256}
  kptllm: {image_size: 64, prompt_pe_dim: 32, prompt_extractor_heads: 2, llm_tuning: full, vision_tuning: full, lora_dropout: 0.0}
data:
  sources: [{type: keypointworld}]
  questions_per_image: 3
  flip_prob: 0.0
train: {steps: 6, images_per_step: 2, lr: 2.0e-3, warmup_steps: 1, log_every: 1, save_every: 100, num_workers: 0}
"""


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(tiny_config):
    config = TrainConfig.load(tiny_config)
    torch.manual_seed(0)
    model, processor = build_model(config.model, tokenizer_text=tokenizer_corpus())
    mixture = TrainingMixture(processor, [KeypointWorldSource()], questions_per_image=3, flip_prob=0.0)
    batch = mixture.collate([mixture[i] for i in range(2)])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.0)
    model.train()
    first = None
    for _ in range(15):
        loss = model(**batch).loss
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.8 * first


def test_seed_override_draws_other_scenes(tiny_config, tmp_path):
    """A continued model trained with its old seed would see its old scenes again: --seed changes them."""
    runs = {seed: tmp_path / f"seed{seed}" for seed in (None, 0, 5)}
    for seed, run in runs.items():
        extra = [] if seed is None else ["--seed", str(seed)]
        assert main(["train", "--config", str(tiny_config), "--output", str(run), "--stop-after", "1",
                     "--no-progress", *extra]) == 0
    assert json.loads((runs[5] / "run.json").read_text())["train"]["seed"] == 5
    assert _losses(runs[0]) == pytest.approx(_losses(runs[None]), rel=1e-6)  # the config's seed is 0
    assert _losses(runs[5])[0] != pytest.approx(_losses(runs[0])[0], rel=1e-3)


def test_resume_continues_the_same_loss_curve(tiny_config, tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert main(["train", "--config", str(tiny_config), "--output", str(straight), "--no-progress"]) == 0
    assert main(["train", "--config", str(tiny_config), "--output", str(stopped), "--stop-after", "3", "--no-progress"]) == 0
    assert len(_losses(stopped)) == 3
    with (stopped / "metrics.jsonl").open("a") as f:  # step 4 logged, then a crash before it was saved
        f.write('{"step": 4, "loss": 9.9}\n')
    assert main(["train", "--config", str(tiny_config), "--output", str(stopped), "--resume", "--no-progress"]) == 0
    assert _losses(stopped) == pytest.approx(_losses(straight), rel=1e-5)  # step 4 once, as rerun
    assert (stopped / "loss.png").is_file() and (stopped / "model" / "config.json").is_file()
    # the saved model is a normal checkpoint
    from kptllm import KeypointPredictor

    predictor = KeypointPredictor.from_pretrained(stopped / "model", device="cpu")
    predictor.set_image(str(ROOT / "assets" / "examples" / "keypointworld_person.jpg"))
    assert len(predictor.detect(["nose"])) == 1


def test_ctrl_c_saves_after_the_step_and_resume_continues_the_curve(tiny_config, tmp_path):
    """The first SIGINT lets the step finish, saves and stops; --resume then gives the uninterrupted curve."""
    import signal

    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert main(["train", "--config", str(tiny_config), "--output", str(straight), "--no-progress"]) == 0
    readings = {"n": 0}

    def clock():  # the 12th reading of the clock (inside step 3 or so) is a Ctrl-C
        readings["n"] += 1
        if readings["n"] == 12:
            signal.raise_signal(signal.SIGINT)
        return 1000.0 + readings["n"]

    # the test needs Python's own handler whatever the parent set (nohup and some CI runners ignore SIGINT)
    parents = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = train(TrainConfig.load(tiny_config), stopped, progress=False, clock=clock)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    finally:
        signal.signal(signal.SIGINT, parents)
    assert 1 <= result["step"] < 6 and len(_losses(stopped)) == result["step"]
    assert json.loads((stopped / "checkpoint" / "step.json").read_text())["step"] == result["step"]
    assert main(["train", "--config", str(tiny_config), "--output", str(stopped), "--resume", "--no-progress"]) == 0
    assert _losses(stopped) == pytest.approx(_losses(straight), rel=1e-5)


class _Clock:
    """A fake clock: each reading is one second later, so a time budget is spent in a known number of readings."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        self.now += 1.0
        return self.now


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_time_budget_spans_the_cosine_and_stops_when_spent(tiny_config, tmp_path):
    config = TrainConfig.load(tiny_config)
    config.train.steps, config.train.warmup_steps, config.train.time_budget = 1000, 2, 80.0
    train(config, tmp_path / "run", progress=False, clock=_Clock())
    rows = _rows(tmp_path / "run")
    assert 5 < len(rows) < 80  # stopped by the budget, long before `steps`
    lrs = [r["lr"] for r in rows]
    assert lrs[0] == pytest.approx(1e-3) and lrs[1] > 0.9 * 2e-3  # warmup by steps (half-way after step 1)
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:]))  # the cosine follows the clock down ...
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12) and rows[-1]["elapsed"] >= 80.0  # ... to its end
    # a step-based schedule with the same steps would still be at its peak
    assert lrs[len(lrs) // 2] < 0.9 * 2e-3
    assert all(0 < r["data_wait"] < 1 for r in rows)  # the loader's share of the loop's time, per log line
    saved = json.loads((tmp_path / "run" / "checkpoint" / "step.json").read_text())
    assert saved["step"] == rows[-1]["step"] and saved["trained_seconds"] >= 80.0


@pytest.mark.parametrize("budget", ["0", "-5"])
def test_a_time_budget_that_is_not_positive_is_refused(tiny_config, tmp_path, capsys, budget):
    assert main(["train", "--config", str(tiny_config), "--output", str(tmp_path / "run"), "--time-budget", budget,
                 "--no-progress"]) == 2
    assert "time_budget must be a positive number of seconds" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_length_buckets_below_one_are_refused(tiny_config, tmp_path):
    config = TrainConfig.load(tiny_config)
    config.train.shared_prefix, config.train.length_buckets = True, 0
    with pytest.raises(ValueError, match="length_buckets must be at least 1"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_run_stopped_before_its_first_log_line_still_logs_its_last_step(tiny_config, tmp_path):
    config = TrainConfig.load(tiny_config)
    config.train.steps, config.train.time_budget, config.train.log_every = 1000, 12.0, 500
    train(config, tmp_path / "run", progress=False, clock=_Clock())
    rows = _rows(tmp_path / "run")
    assert len(rows) == 1 and 1 < rows[0]["step"] < 500
    assert (tmp_path / "run" / "loss.png").is_file()


def test_a_resumed_time_budget_counts_the_seconds_already_trained(tiny_config, tmp_path):
    config = TrainConfig.load(tiny_config)
    config.train.steps, config.train.warmup_steps, config.train.time_budget = 1000, 2, 80.0
    config.train.stop_after = 3
    train(config, tmp_path / "run", progress=False, clock=_Clock())
    first = _rows(tmp_path / "run")
    trained = json.loads((tmp_path / "run" / "checkpoint" / "step.json").read_text())["trained_seconds"]
    assert len(first) == 3 and 0 < trained < 40.0
    config.train.stop_after = None
    train(config, tmp_path / "run", resume=True, progress=False, clock=_Clock())
    rows = _rows(tmp_path / "run")
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    elapsed = [r["elapsed"] for r in rows]
    assert all(a < b for a, b in zip(elapsed, elapsed[1:])) and elapsed[3] > trained  # one clock across runs
    assert rows[-1]["lr"] == pytest.approx(0.0, abs=1e-12) and elapsed[-1] >= 80.0
    assert elapsed[-1] < 80.0 + trained / 2  # the resumed part had only the rest of the budget (a step is a few readings)
    # resuming a run whose budget is spent trains nothing (not one more step at the floor lr)
    weights = (tmp_path / "run" / "model" / "model.safetensors").read_bytes()
    assert train(config, tmp_path / "run", resume=True, progress=False, clock=_Clock())["loss"] is None
    assert _rows(tmp_path / "run") == rows and (tmp_path / "run" / "model" / "model.safetensors").read_bytes() == weights


def test_a_run_refuses_to_overwrite_and_resume_needs_a_checkpoint(tiny_config, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", str(tiny_config), "--output", str(run), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["train", "--config", str(tiny_config), "--output", str(run), "--stop-after", "1", "--no-progress"]) == 0
    assert main(["train", "--config", str(tiny_config), "--output", str(run), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_a_config_folder_and_a_negative_synth_seed_are_named(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path), "--dry-run"]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "kw"), "--n", "1", "--seed", "-1"]) == 2
    assert "--seed must be >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ("model: [\n", "not valid YAML"),
    ("model: 5\ndata: {}\n", "'model' section must be a mapping"),
    ("model: {type: nothing}\ndata: {}\n", "unknown model type 'nothing'"),
    ("model: {type: scratch, vision: {hidden_size: 8}}\ndata: {}\n", "model.vision needs a model_type"),
    ("model: {type: scratch, llm: {model_type: llama}}\ndata: {}\n", "needs model.vision"),
    ("model: {type: checkpoint}\ndata: {}\n", "needs model.path"),
    ("model: {type: checkpoint, path: x}\ndata: [1]\n", "'data' section must be a mapping"),
    ("model: {type: checkpoint, path: x}\ndata: {}\ntrain: 3\n", "'train' section must be a mapping"),
    ("model: {type: checkpoint, path: x}\ndata: {jpeg: {prob: 2}}\n", "data.jpeg takes a mapping"),
])
def test_bad_configs_exit_2_with_one_line(tmp_path, capsys, text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert main(["train", "--config", str(config), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_dry_run_of_the_paper_configs_prints_sizes_without_downloading(capsys):
    for name, low, high in (("kptllm_pp.yaml", 6.5e9, 8e9), ("kptllm.yaml", 6.5e9, 8e9)):
        assert main(["train", "--config", str(ROOT / "configs" / name), "--dry-run"]) == 0
        out = capsys.readouterr().out
        line = next(l for l in out.splitlines() if "total" in l)
        total = int(line.split("total")[1].split()[0].replace(",", ""))
        assert low < total < high, (name, total)
        assert "data:" in out


def test_dry_run_counts_the_parameters_training_builds(tiny_config, capsys):
    """A scratch model's size includes its trained tokenizer's rows; the dry run names the default task weights."""
    from evaluation.training.model import count_parameters

    assert main(["train", "--config", str(tiny_config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    total = int(next(line for line in out.splitlines() if "total" in line).split("total")[1].split()[0].replace(",", ""))
    model, _ = build_model(TrainConfig.load(tiny_config).model, tokenizer_text=tokenizer_corpus())
    assert total == count_parameters(model)[1]
    assert 'tasks: {"text": 0.35' in out


@pytest.mark.skipif(sys.platform != "linux", reason="gloo on linux")
@pytest.mark.parametrize("schedule", [["--steps", "3"], ["--steps", "1000", "--time-budget", "5"]], ids=["steps", "time-budget"])
def test_two_cpu_processes_through_torchrun_end_with_the_same_weights(tiny_config, tmp_path, schedule):
    """With a time budget each process reads its own clock: the lr and the stop must still be one."""
    run = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "evaluation.cli", "train",
           "--config", str(tiny_config), "--output", str(run), *schedule, "--no-progress"]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((run / "final_state.json").read_text())
    assert len(state["weight_checksums"]) == 2
    assert state["weight_checksums"][0] == state["weight_checksums"][1]
    assert state["step"] == 3 if "--time-budget" not in schedule else 3 < state["step"] < 1000
    assert json.loads((run / "run.json").read_text())["processes"] == 2
    if "--time-budget" not in schedule:  # the lr schedule is the one-process schedule (one scheduler step per step)
        single = tmp_path / "single"
        assert main(["train", "--config", str(tiny_config), "--output", str(single), *schedule, "--no-progress"]) == 0
        assert [r["lr"] for r in _rows(run)] == pytest.approx([r["lr"] for r in _rows(single)])


def test_shared_images_in_a_batch_are_encoded_once_with_the_same_loss(tiny_config):
    """Questions about one image share its crop (`image_index`); the loss equals one crop per row."""
    config = TrainConfig.load(tiny_config)
    model, processor = build_model(config.model, tokenizer_text=tokenizer_corpus())
    mixture = TrainingMixture(processor, [KeypointWorldSource()], questions_per_image=4, flip_prob=0.0,
                              task_weights={"visual": 0.5, "text": 0.5})
    batch = mixture.collate([mixture[i] for i in range(3)])
    rows = batch["input_ids"].shape[0]
    assert batch["pixel_values"].shape[0] == 3 < rows
    assert batch["support_pixel_values"].shape[0] < len(batch["kpt_points"])
    expanded = dict(batch)
    expanded["pixel_values"] = batch["pixel_values"][batch["image_index"]]
    del expanded["image_index"]
    expanded["support_pixel_values"] = batch["support_pixel_values"][batch["kpt_support_ids"]]
    expanded["kpt_support_ids"] = torch.arange(len(batch["kpt_points"]))
    model.eval()
    with torch.no_grad():
        assert model(**batch).loss.item() == pytest.approx(model(**expanded).loss.item(), rel=1e-5)


def test_a_shared_prefix_gives_the_plain_forwards_loss_and_gradients(tiny_config):
    """Each image's prefix run once (rows attend to its KV): the same loss and gradients as every row
    running it, and a batch whose rows do not share their prefix is refused."""
    config = TrainConfig.load(tiny_config)
    torch.manual_seed(0)
    model, processor = build_model(config.model, tokenizer_text=tokenizer_corpus())
    model.train()
    mixture = TrainingMixture(processor, [KeypointWorldSource()], questions_per_image=4, flip_prob=0.0)
    batch = mixture.collate([mixture[i] for i in range(3)])
    assert batch["image_index"].unique().numel() < batch["input_ids"].shape[0]  # rows do share images
    length = len(processor.encode_prefix())

    def loss_and_grads(**extra):
        model.zero_grad(set_to_none=True)
        loss = model(**batch, **extra).loss
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, plain_grads = loss_and_grads()
    lengths = batch["attention_mask"][:, length:].sum(1)
    assert lengths.unique().numel() > 3  # rows of several lengths: the buckets pad differently
    scale = max(g.abs().max().item() for g in plain_grads.values())
    for buckets in (1, 3, 1000):  # 1000: more buckets than rows, one row per group
        shared, shared_grads = loss_and_grads(shared_prefix_length=length, length_buckets=buckets)
        assert shared == pytest.approx(plain, rel=1e-5), buckets
        assert plain_grads.keys() == shared_grads.keys()
        for name, grad in plain_grads.items():
            assert torch.allclose(shared_grads[name], grad, rtol=1e-3, atol=1e-5 * scale), (buckets, name)
    # one position too long: the rows differ there (the query starts), which must not pass silently
    # images numbered in reverse (image_index not sorted) and a row without labels: still the same
    count = int(batch["image_index"].max()) + 1
    labels = batch["labels"].clone()
    labels[0] = -100
    batch = dict(batch, image_index=count - 1 - batch["image_index"], pixel_values=batch["pixel_values"][:count].flip(0),
                 labels=labels)
    plain, plain_grads = loss_and_grads()
    shared, shared_grads = loss_and_grads(shared_prefix_length=length, length_buckets=3)
    assert shared == pytest.approx(plain, rel=1e-5)
    for name, grad in plain_grads.items():
        assert torch.allclose(shared_grads[name], grad, rtol=1e-3, atol=1e-5 * scale), ("renumbered", name)
    with pytest.raises(ValueError, match="share their first tokens"):
        model(**batch, shared_prefix_length=length + 2)
    with pytest.raises(ValueError, match="an image without rows"):
        model(**dict(batch, image_index=batch["image_index"] + 1), shared_prefix_length=length)


def test_training_with_a_shared_prefix_follows_the_plain_loss_curve(tiny_config, tmp_path):
    curves = {}
    for shared in (False, True):
        config = TrainConfig.load(tiny_config)
        config.train.steps, config.train.shared_prefix = 3, shared
        train(config, tmp_path / str(shared), progress=False)
        curves[shared] = _losses(tmp_path / str(shared))
    assert len(curves[True]) == 3 and curves[True] == pytest.approx(curves[False], rel=1e-4)


def test_continuing_the_shipped_float16_checkpoint_trains_float32_weights(monkeypatch):
    """configs/keypointworld_continue.yaml starts from assets/ (float16 on disk): Adam needs float32 weights."""
    import yaml

    monkeypatch.chdir(ROOT)
    spec = yaml.safe_load((ROOT / "configs" / "keypointworld_continue.yaml").read_text())["model"]
    model, processor = build_model(spec)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert all(p.requires_grad for p in model.parameters())  # llm_tuning / vision_tuning: full
    assert processor.tokenizer is not None


def test_questions_per_keypoint_asks_each_keypoint_in_distinct_tasks(tiny_config):
    config = TrainConfig.load(tiny_config)
    _, processor = build_model(config.model, tokenizer_text=tokenizer_corpus())
    weights = {"text": 0.4, "semantic": 0.4, "visual": 0.2}
    once = TrainingMixture(processor, [KeypointWorldSource()], questions_per_image=16, flip_prob=0.0, task_weights=weights)
    default = TrainingMixture(processor, [KeypointWorldSource()], questions_per_image=16, flip_prob=0.0,
                              task_weights=weights, questions_per_keypoint=1)
    twice = TrainingMixture(processor, [KeypointWorldSource()], questions_per_image=16, flip_prob=0.0,
                            task_weights=weights, questions_per_keypoint=2)
    for index in range(4):
        one, two = once[index], twice[index]
        assert [(s.task, s.semantics) for s in one] == [(s.task, s.semantics) for s in default[index]]  # the old stream
        by_keypoint = {}
        for sample in two:
            by_keypoint.setdefault(sample.semantics, []).append(sample.task.value)
        # two distinct tasks per keypoint; one where a visual question had no support to show and fell back to
        # the text question the keypoint already had (never the same question twice)
        assert all(len(tasks) == len(set(tasks)) for tasks in by_keypoint.values())
        assert all(len(tasks) == 2 or tasks == ["text"] for tasks in by_keypoint.values())
        assert len(one) <= len(two) <= 2 * len(one)
        assert {s.semantics for s in two} == {s.semantics for s in one}
    # text and visual only: every visual question without a visible support falls back to the text one
    pair = TrainingMixture(processor, [KeypointWorldSource()], questions_per_image=16, flip_prob=0.0,
                           task_weights={"text": 0.5, "visual": 0.5}, questions_per_keypoint=2)
    for index in range(30):
        asked = [(s.semantics, s.task.value) for s in pair[index]]
        assert len(asked) == len(set(asked)), index
    with pytest.raises(ValueError, match="questions_per_keypoint"):
        TrainingMixture(processor, [KeypointWorldSource()], task_weights=weights, questions_per_keypoint=4)
    # two tasks with a weight: three distinct ones cannot be drawn (refused here, not in the loader)
    with pytest.raises(ValueError, match=r"1..2 \(one per task with a non-zero weight\), got 3"):
        TrainingMixture(processor, [KeypointWorldSource()], questions_per_keypoint=3,
                        task_weights={"text": 1, "visual": 0, "semantic": 1, "visual_text": 0})


def test_lr_multipliers_give_a_module_its_own_rate_under_the_same_schedule(tiny_config):
    from evaluation.training.train import build_optimizer, build_scheduler

    config = TrainConfig.load(tiny_config)
    model, _ = build_model(config.model, tokenizer_text=tokenizer_corpus())
    settings = config.train
    settings.steps, settings.warmup_steps, settings.min_lr_ratio, settings.time_budget = 20, 2, 0.1, 100.0
    plain_optimizer = build_optimizer(model, settings)
    settings.lr_multipliers = {"prompt_feature_extractor": 10, "prompt_encoder": 10.0}
    optimizer = build_optimizer(model, settings)
    prompt = {id(p) for m in (model.prompt_feature_extractor, model.prompt_encoder) for p in m.parameters()}
    assert [len(g["params"]) for g in optimizer.param_groups][0] == len(plain_optimizer.param_groups[0]["params"]) - len(prompt)
    assert {id(p) for g in optimizer.param_groups[1:] for p in g["params"]} == prompt
    spent = {"fraction": 0.0}
    scheduler = build_scheduler(optimizer, settings, spent)
    for step in range(12):
        spent["fraction"] = step / 10  # the time-budget cosine reads the loop's clock
        rates = scheduler.get_last_lr()
        assert rates[1] == pytest.approx(10 * rates[0]) and rates[2] == pytest.approx(10 * rates[0])
        optimizer.step(), scheduler.step()
    assert rates[0] == pytest.approx(settings.min_lr_ratio * settings.lr)  # the budget is spent: the floor
    for bad, message in (({"nowhere": 2}, "has no module 'nowhere'"), ({"projector": 0}, "positive factor"),
                         ({"projector": True}, "positive factor")):
        settings.lr_multipliers = bad
        with pytest.raises(ValueError, match=message):
            build_optimizer(model, settings)


def test_a_run_with_lr_multipliers_trains(tiny_config, tmp_path):
    tiny_config.write_text(TINY.replace("warmup_steps: 1,", "warmup_steps: 1, lr_multipliers: {prompt_feature_extractor: 5},"))
    config = TrainConfig.load(tiny_config)
    config.train.steps = 2
    train(config, tmp_path / "run", progress=False)
    assert len(_losses(tmp_path / "run")) == 2
    tiny_config.write_text(TINY.replace("warmup_steps: 1,", "warmup_steps: 1, lr_multipliers: [5],"))
    with pytest.raises(ValueError, match="lr_multipliers must map module names"):
        TrainConfig.load(tiny_config)


def test_semantic_questions_and_support_marks_are_at_visible_keypoints(tiny_config, monkeypatch):
    """An occluded keypoint (v=1) is asked by name, never "what is this point", and never marked on a support."""
    import numpy as np

    config = TrainConfig.load(tiny_config)
    _, processor = build_model(config.model, tokenizer_text=tokenizer_corpus())
    drawn, original = [], KeypointWorldSource.sample

    def with_occluded(self, rng, shots):  # every other labelled keypoint of each instance becomes occluded
        query, supports = original(self, rng, shots)
        for instance in (query, *supports):
            instance.keypoints = instance.keypoints.copy()
            instance.keypoints[np.nonzero(instance.keypoints[:, 2] > 0)[0][::2], 2] = 1
        drawn.append((query, supports))
        return query, supports

    monkeypatch.setattr(KeypointWorldSource, "sample", with_occluded)
    mixture = TrainingMixture(processor, [KeypointWorldSource()], questions_per_image=16, flip_prob=0.0,
                              task_weights={"semantic": 0.5, "visual": 0.5}, questions_per_keypoint=2)
    counts = {"semantic": 0, "fallback": 0, "marks": 0}
    for index in range(12):
        samples = mixture[index]
        query, supports = drawn[-1]
        visibility = dict(zip(query.names, query.keypoints[:, 2]))
        for sample in samples:
            if sample.task.value == "semantic":
                assert visibility[sample.semantics] == 2, sample.semantics
                counts["semantic"] += 1
            elif sample.task.value == "text":  # a semantic question about an occluded point, asked by name
                counts["fallback"] += visibility[sample.semantics] == 1
            else:
                k = query.names.index(sample.semantics)
                for point in sample.support_points:
                    marked = [s for s in supports if np.allclose(s.keypoints[k, :2], point)]
                    assert marked and all(s.keypoints[k, 2] == 2 for s in marked), sample.semantics
                    counts["marks"] += 1
    assert min(counts.values()) > 5, counts


def test_validation_rows_join_the_curve_without_counting_as_training(tiny_config, tmp_path):
    from evaluation.training.train import plot_loss

    config = TrainConfig.load(tiny_config)
    config.train.steps, config.train.validate_every, config.train.validate_objects = 4, 2, 1
    train(config, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    checks = [r for r in rows if "validation" in r]
    assert [r["step"] for r in checks] == [2, 4]
    assert set(checks[0]["validation"]) >= {"seed", "objects", "text_pck@0.2", "visual_pck@0.2", "semantic_accuracy"}
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    plot_loss(tmp_path / "run" / "metrics.jsonl", tmp_path / "loss.png")  # validation rows have no loss: skipped
    # the best validated model is kept, with the row that chose it
    from evaluation.training.train import selection_score

    best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    winner = max(checks, key=lambda r: selection_score(r["validation"]))  # the first of equals
    assert best["step"] == winner["step"] and best["validation"] == winner["validation"]
    assert (tmp_path / "run" / "best" / "config.json").is_file()


def test_the_best_model_is_replaced_only_by_a_better_one(tmp_path):
    from evaluation.training.train import _best_so_far, _save_best, selection_score
    from kptllm.build import build_tiny

    model, processor = build_tiny(seed=0)
    row = {"step": 60, "validation": {"text_pck@0.2": 0.9, "visual_pck@0.2": 0.6, "semantic_accuracy": None,
                                      "jpeg_quality": 95}}
    assert selection_score(row["validation"]) == pytest.approx(0.75) and _best_so_far(tmp_path) == float("-inf")
    _save_best(model, processor, tmp_path, row)
    assert _best_so_far(tmp_path) == pytest.approx(0.75)
    assert not (tmp_path / ".best.tmp").exists() and (tmp_path / "best" / "model.safetensors").is_file()
    # a best validated on other images (a run begun before validation saw JPEG files: lossless, higher) is no best
    assert _best_so_far(tmp_path, jpeg_quality=None) == float("-inf")
    del row["validation"]["jpeg_quality"]
    _save_best(model, processor, tmp_path, row)
    assert _best_so_far(tmp_path) == float("-inf")


def test_auto_resume_starts_a_run_then_continues_it(tiny_config, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--config", str(tiny_config), "--output", str(out), "--steps", "2", "--save-every", "1",
                 "--no-progress", "--auto-resume"]) == 0
    assert main(["train", "--config", str(tiny_config), "--output", str(out), "--steps", "4", "--save-every", "1",
                 "--no-progress", "--auto-resume"]) == 0
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    # a run that logged but never saved has nothing to resume: its log is kept aside and the run starts again
    other = tmp_path / "unsaved"
    other.mkdir()
    (other / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    assert main(["train", "--config", str(tiny_config), "--output", str(other), "--steps", "1",
                 "--no-progress", "--auto-resume"]) == 0
    assert (other / "metrics.unsaved.jsonl").read_text() == '{"step": 1, "loss": 1.0}\n'
    assert [json.loads(line)["step"] for line in (other / "metrics.jsonl").read_text().splitlines()] == [1]


def test_resuming_with_other_settings_is_refused(tiny_config, tmp_path, capsys):
    """A new seed or task mix pointed at an old run's folder would continue that run under settings it never had
    (the CPU recipe's `--auto-resume` did so silently): refused, exit 2 (cpu_run.sh does not retry it). A longer
    budget or other logging is a resume."""
    run = tmp_path / "run"
    assert main(["train", "--config", str(tiny_config), "--output", str(run), "--stop-after", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", "--config", str(tiny_config), "--output", str(run), "--auto-resume", "--seed", "99",
                 "--no-progress"]) == 2
    assert "train.seed" in capsys.readouterr().err
    other = tmp_path / "other.yaml"
    other.write_text(TINY.replace("questions_per_image: 3", "questions_per_image: 4"))
    assert "questions_per_image: 4" in other.read_text()
    assert main(["train", "--config", str(other), "--output", str(run), "--resume", "--no-progress"]) == 2
    assert "(data)" in capsys.readouterr().err
    steps = len(_rows(run))
    assert main(["train", "--config", str(tiny_config), "--output", str(run), "--resume", "--stop-after", "2",
                 "--log-every", "1", "--no-progress"]) == 0
    assert len(_rows(run)) > steps


def test_off_centre_scenes_move_the_object_with_its_keypoints():
    """`off_centre_prob`: scenes pasted into larger canvases; the object's box and keypoints move with it
    (the pixels under the moved box are those under the box in the same scene rendered in place)."""
    import numpy as np

    from evaluation.training.data import list_sources

    (source,), _ = list_sources([{"type": "keypointworld", "off_centre_prob": 1.0, "categories": ["chair"]}])
    assert source.off_centre_prob == 1.0
    with pytest.raises(ValueError, match="off_centre_prob"):
        KeypointWorldSource(off_centre_prob=1.5)
    compared = 0
    for seed in range(3):
        plain = KeypointWorldSource(["chair"])._instance(np.random.default_rng(seed), "chair")
        moved = KeypointWorldSource(["chair"], off_centre_prob=1.0)._instance(np.random.default_rng(seed), "chair")
        assert moved.image.width >= 1.4 * plain.image.width - 1 and moved.image.height >= 1.1 * plain.image.height - 1
        # the same scene underneath: find the plain object of the same size, then compare pixels and keypoints
        dx, dy = moved.bbox[0] - plain.bbox[0], moved.bbox[1] - plain.bbox[1]
        if moved.bbox[2:] != plain.bbox[2:]:  # another object of the scene was picked: nothing to compare
            continue
        assert dx == int(dx) and dy == int(dy) and (dx, dy) != (0, 0)
        visible = plain.keypoints[:, 2] > 0
        assert np.allclose(moved.keypoints[visible, :2], plain.keypoints[visible, :2] + (dx, dy))
        x, y, w, h = (int(v) for v in plain.bbox)
        region = np.asarray(plain.image)[y:y + h, x:x + w]
        assert np.array_equal(np.asarray(moved.image)[y + int(dy):y + int(dy) + h, x + int(dx):x + int(dx) + w], region)
        compared += 1
    assert compared >= 2


def test_box_jitter_as_a_number_keeps_the_old_draws_and_a_mapping_changes_the_aspect():
    """A number disturbs scale and centre as stages 1-13 did (aspect kept, same draws); {independent: true}
    scales width and height apart with the spread asked (the embedded detector's boxes: sd ~0.15 in log size)."""
    import numpy as np

    from evaluation.training.data import BoxJitter, _jitter_box

    def old(bbox, rng, amount):  # stages 1-13's formula, written out
        x, y, w, h = bbox
        scale = float(np.exp(rng.uniform(-amount, amount)))
        cx = x + w / 2 + rng.uniform(-amount, amount) * w / 2
        cy = y + h / 2 + rng.uniform(-amount, amount) * h / 2
        return (cx - w * scale / 2, cy - h * scale / 2, w * scale, h * scale)

    box = (10.0, 20.0, 80.0, 40.0)
    for i in range(20):
        assert _jitter_box(box, np.random.default_rng(i), 0.1) == pytest.approx(old(box, np.random.default_rng(i), 0.1))
        x, y, w, h = _jitter_box(box, np.random.default_rng(i), 0.1)
        assert w / h == pytest.approx(2.0)
    jitter = BoxJitter.of({"scale": 0.25, "shift": 0.25, "independent": True})
    boxes = np.array([_jitter_box(box, np.random.default_rng(i), jitter) for i in range(2000)])
    log_w, log_h = np.log(boxes[:, 2] / 80), np.log(boxes[:, 3] / 40)
    assert 0.12 < log_w.std() < 0.17 and 0.12 < log_h.std() < 0.17 and abs(np.corrcoef(log_w, log_h)[0, 1]) < 0.1
    centre_x = (boxes[:, 0] + boxes[:, 2] / 2 - 50) / 80
    assert 0.06 < centre_x.std() < 0.085
    assert _jitter_box(box, np.random.default_rng(0), 0.0) == box
    for bad in ({"scale": -1}, {"sizes": 0.2}, -0.1):
        with pytest.raises(ValueError, match="box_jitter"):
            BoxJitter.of(bad)


def test_jpeg_passes_images_as_a_file_would_and_leaves_the_questions_alone(tiny_config):
    """`jpeg:` gives the crops JPEG's losses (what the sets' files and a visitor's photos hold) from its own
    random stream: the questions, boxes and answers of every item are those drawn without it."""
    import numpy as np

    from evaluation.training.augment import JpegAugment

    config = TrainConfig.load(tiny_config)
    _, processor = build_model(config.model, tokenizer_text=tokenizer_corpus())
    kwargs = dict(questions_per_image=4, flip_prob=0.0, box_jitter={"scale": 0.25, "shift": 0.25, "independent": True})
    plain = TrainingMixture(processor, [KeypointWorldSource()], **kwargs)
    lossy = TrainingMixture(processor, [KeypointWorldSource()], jpeg={"prob": 1.0, "quality": [40, 40]}, **kwargs)
    changed = 0
    for index in range(4):
        a, b = plain[index], lossy[index]
        assert [(s.task, s.semantics, s.xy, s.text, s.support_points) for s in a] == \
            [(s.task, s.semantics, s.xy, s.text, s.support_points) for s in b]
        for x, y in zip(a, b):
            assert x.query.crop == y.query.crop  # the same box and frame, other pixels
            diff = (x.query.pixel_values - y.query.pixel_values).abs().mean().item()
            assert diff < 0.15  # the same picture (normalised pixels), with JPEG's losses
            changed += diff > 0.005
    assert changed >= 4
    # prob 0 draws nothing: the stream is untouched and the image is the very object given
    from PIL import Image

    rng, image = np.random.default_rng(3), Image.new("RGB", (8, 8))
    assert JpegAugment.of({"prob": 0.0})(image, rng) is image and rng.random() == np.random.default_rng(3).random()
    for bad in ({"prob": 1.5}, {"quality": [90, 80]}, {"quality": [0, 50]}, {"level": 3}, 0.5):
        with pytest.raises(ValueError, match="jpeg"):
            JpegAugment.of(bad)
