"""The training loop: one config runs on a CPU, one GPU, or many through `accelerate launch` / `torchrun`.

    kptllm train --config configs/keypointworld.yaml --output runs/kw            # start (or --resume)
    accelerate launch --num_processes 2 --cpu -m evaluation.cli train --config ... --output ...

Read it top to bottom: build model + data, AdamW (lr 2e-4, no weight decay by default), warmup + cosine,
then for each step: the batch of that step -> loss -> backward -> clip -> step. Every `log_every` steps a
line goes to `OUTPUT/metrics.jsonl` (loss, lr, elapsed, sequences/s, `data_wait`: the loader's share of
the time); every `save_every` steps (and at the end, or when `time_limit`, `time_budget` or `stop_after`
stops the run) `OUTPUT/checkpoint/` gets the full training state (model, optimizer, scheduler, RNG, step)
and `OUTPUT/model/` a loadable model + tokenizer. `--resume` continues from `OUTPUT/checkpoint/` and
appends to the same metrics log, so the loss curve goes on where it stopped (`--auto-resume`: resume when
there is a checkpoint, else start; `cpu_run.sh` restarts a stopped run that way). `OUTPUT/loss.png` is
redrawn at each save. Every `validate_every` steps the held-out check of `validate.py` adds a row
`{"step", "elapsed", "validation": {...}}` to the same log (its seconds are not counted as training), and
the model of the best such row so far (`selection_score`) is kept in OUTPUT/best.

`time_budget` (seconds, for lent GPUs) makes the cosine span training time instead of steps: after the
warmup steps the lr follows the fraction of the budget spent, and the run saves and stops when the
budget is spent (`steps` is then only an upper bound). Resumed runs count the seconds already trained
(a run resumed with a larger budget goes on from the cosine's point at its spent fraction, no new
warmup; a warmup longer than the budget is cut short). The fraction is the slowest process's, so
data-parallel replicas keep one lr.

The batch of step s on process r is the items `(s * world + r) * B ... + B` of the mixture, each a
deterministic function of its index, so a resumed or re-sharded run sees the same data.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator, DistributedDataParallelKwargs
from torch.utils.data import DataLoader, Sampler
from transformers import get_cosine_schedule_with_warmup

from ..data.keypointworld import DEFAULT_VERSION, FILE_QUALITY
from .augment import JpegAugment
from .data import TrainingMixture, list_sources, tokenizer_corpus
from .model import build_model, check_model_spec, count_parameters


@dataclass
class TrainSettings:
    steps: int = 1000
    images_per_step: int = 16  # per process; each gives up to `questions_per_image` sequences
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16"
    num_workers: int = 0
    seed: int = 0
    log_every: int = 10
    save_every: int = 500
    time_limit: float | None = None  # seconds of this invocation; save and stop when reached
    time_budget: float | None = None  # seconds of training in all; the cosine spans them (module docstring)
    stop_after: int | None = None  # save and stop after this step (the schedule still spans `steps`)
    shared_prefix: bool = False  # each image's prefix through the LM once per step (same loss; modeling docs)
    length_buckets: int = 4  # with shared_prefix: rows in groups of similar length, each padded to its own longest
    lr_multipliers: dict | None = None  # {top-level module, e.g. prompt_feature_extractor: factor} (build_optimizer)
    validate_every: int | None = None  # steps; held-out KeypointWorld validation into metrics.jsonl (`validation_row`)
    validate_objects: int = 40  # held-out objects per validation (validate.py, seed HELD_OUT_SEED)


@dataclass
class TrainConfig:
    model: dict
    data: dict
    train: TrainSettings = field(default_factory=TrainSettings)
    path: Path | None = None

    @classmethod
    def load(cls, path) -> "TrainConfig":
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"--config {path} is a folder; give a YAML file (e.g. configs/keypointworld.yaml)")
        if not path.is_file():
            raise ValueError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
        if not isinstance(raw, dict) or "model" not in raw or "data" not in raw:
            raise ValueError(f"{path}: a training config needs 'model' and 'data' sections")
        try:
            check_model_spec(raw["model"])
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        if not isinstance(raw["data"], dict):
            raise ValueError(f"{path}: the 'data' section must be a mapping")
        try:
            JpegAugment.of(raw["data"].get("jpeg"))
        except ValueError as err:
            raise ValueError(f"{path}: data.{err}") from None
        settings = raw.get("train", {}) or {}
        if not isinstance(settings, dict):
            raise ValueError(f"{path}: the 'train' section must be a mapping")
        unknown = set(settings) - set(TrainSettings.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown train settings {sorted(unknown)}")
        if "betas" in settings:
            settings["betas"] = tuple(settings["betas"])
        if settings.get("lr_multipliers") is not None and not isinstance(settings["lr_multipliers"], dict):
            raise ValueError(f"{path}: lr_multipliers must map module names to factors, e.g. {{prompt_encoder: 10}}")
        return cls(raw["model"], raw["data"], TrainSettings(**settings), path)


def build_optimizer(model: torch.nn.Module, settings: TrainSettings) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; `settings.lr_multipliers` ({top-level module: factor}) puts a
    module's parameters in a group of their own at `factor` x the learning rate (group 0: the rest)."""
    multipliers = dict(settings.lr_multipliers or {})
    modules = dict(model.named_children())
    for name, factor in multipliers.items():
        if name not in modules:
            raise ValueError(f"lr_multipliers: the model has no module {name!r} (it has: {', '.join(modules)})")
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
            raise ValueError(f"lr_multipliers: {name} needs a positive factor, got {factor!r}")
    groups = {name: [] for name in [None, *multipliers]}
    for name, module in modules.items():
        groups[name if name in multipliers else None] += [p for p in module.parameters() if p.requires_grad]
    params = [{"params": groups[None], "lr": settings.lr}]
    params += [{"params": groups[name], "lr": settings.lr * float(multipliers[name])} for name in multipliers if groups[name]]
    return torch.optim.AdamW(params, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay)


def build_scheduler(optimizer, settings: TrainSettings, spent: dict):
    """Warmup + cosine over `steps` (or over `time_budget` seconds: `spent["fraction"]`, set by the loop), to a
    floor of `min_lr_ratio`; one schedule for every parameter group (their ratios stay fixed)."""
    scheduler = get_cosine_schedule_with_warmup(optimizer, settings.warmup_steps, settings.steps)
    schedule = scheduler.lr_lambdas[0]
    if settings.time_budget is not None:
        warmup = schedule
        schedule = lambda s: warmup(s) if s < settings.warmup_steps else \
            0.5 * (1.0 + math.cos(math.pi * min(1.0, spent["fraction"])))  # noqa: E731
    if settings.min_lr_ratio > 0:  # cosine to a floor instead of zero
        floor, cosine = settings.min_lr_ratio, schedule
        schedule = lambda s: max(floor, cosine(s)) if s >= settings.warmup_steps else cosine(s)  # noqa: E731
    scheduler.lr_lambdas = [schedule] * len(optimizer.param_groups)
    return scheduler


class StepSampler(Sampler):
    """Yields, for steps `start..steps-1`, this process's list of item indices (see module docstring)."""

    def __init__(self, start: int, steps: int, per_step: int, rank: int, world: int):
        self.start, self.steps, self.per_step, self.rank, self.world = start, steps, per_step, rank, world

    def __iter__(self):
        for step in range(self.start, self.steps):
            first = (step * self.world + self.rank) * self.per_step
            yield list(range(first, first + self.per_step))

    def __len__(self) -> int:
        return max(0, self.steps - self.start)


def build_mixture(config: TrainConfig, processor) -> TrainingMixture:
    data = config.data
    root = os.path.expandvars(str(data["root"])) if data.get("root") else None
    if root is not None and "$" in root:
        raise ValueError(f"data.root {data['root']!r}: set the environment variable it names")
    base = Path(root) if root else (config.path.parent if config.path else None)
    sources, weights = list_sources(data.get("sources", [{"type": "keypointworld"}]), base)
    return TrainingMixture(processor, sources, weights, seed=config.train.seed,
                           questions_per_image=int(data.get("questions_per_image", 8)),
                           questions_per_keypoint=int(data.get("questions_per_keypoint", 1)),
                           task_weights=data.get("tasks"), description_prob=float(data.get("description_prob", 0.2)),
                           flip_prob=float(data.get("flip_prob", 0.5)), box_jitter=data.get("box_jitter", 0.1),
                           max_shots=int(data.get("max_shots", 3)), jpeg=data.get("jpeg"))


def plot_loss(metrics_file: Path, out: Path) -> None:
    """Loss curve PNG from metrics.jsonl (skipped quietly without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()] \
        if metrics_file.is_file() else []
    rows = [r for r in rows if "loss" in r]  # validation rows carry no loss
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (answer tokens)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _save(accelerator, model, processor, output: Path, step: int, trained_seconds: float = 0.0) -> None:
    """Training state to OUTPUT/checkpoint and a loadable model to OUTPUT/model, each swapped in atomically."""
    for name, write in (("checkpoint", lambda d: accelerator.save_state(str(d))),
                        ("model", lambda d: (accelerator.unwrap_model(model).save_pretrained(d), processor.save_pretrained(d)))):
        tmp = output / f".{name}.tmp"
        if accelerator.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        if name == "checkpoint" or accelerator.is_main_process:
            write(tmp)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if name == "checkpoint":
                (tmp / "step.json").write_text(json.dumps({"step": step, "trained_seconds": round(trained_seconds, 3)}))
            final = output / name
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        plot_loss(output / "metrics.jsonl", output / "loss.png")


def validation_row(model, processor, step: int, objects: int, elapsed: float, version: int | None = None) -> dict:
    """One metrics.jsonl row of held-out numbers (`validate.validate`: text / visual PCK@0.2, semantic
    accuracy on KeypointWorld scenes of a seed training never draws). The model is left in train mode."""
    from kptllm import KeypointPredictor

    from .validate import HELD_OUT_SEED, validate

    with torch.no_grad():
        scores = validate(KeypointPredictor(model, processor), objects, version=version)  # puts the model in eval mode
    model.train()
    return {"step": step, "elapsed": round(elapsed, 2), "validation": {
        "seed": HELD_OUT_SEED, "objects": objects, **({"world_version": version} if version else {}),
        **{k: v for k, v in scores.items() if k != "keypoints"},
        "keypoints": scores["keypoints"]}}


SELECTION_KEYS = ("text_pck@0.2", "visual_pck@0.2", "semantic_accuracy")


def world_version(data: dict) -> int | None:
    """The KeypointWorld version the config's KeypointWorld sources draw (validation scenes are drawn the same
    way); None without one. Sources of two versions in one config are refused."""
    versions = {int(s.get("version", DEFAULT_VERSION)) for s in data.get("sources", []) if s.get("type") == "keypointworld"}
    if len(versions) > 1:
        raise ValueError(f"KeypointWorld sources of versions {sorted(versions)}: validation could match only one")
    return versions.pop() if versions else None


def selection_score(validation: dict) -> float:
    """What chooses a checkpoint: the mean of the three held-out numbers of a validation row (those measured)."""
    values = [validation[k] for k in SELECTION_KEYS if validation.get(k) is not None]
    return sum(values) / len(values) if values else float("-inf")


def _best_so_far(output: Path, jpeg_quality: int | None = FILE_QUALITY) -> float:
    """The selection score of OUTPUT/best (the best validated model of this run so far; -inf if none, or if it was
    validated on other images: a run begun before validation saw JPEG files scored the lossless renders, ~0.02-0.03
    higher, and its best would never be replaced)."""
    try:
        best = json.loads((output / "best" / "best.json").read_text())
        if best["validation"].get("jpeg_quality") != jpeg_quality:
            return float("-inf")
        return float(best["score"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return float("-inf")


def _save_best(model, processor, output: Path, row: dict) -> None:
    """OUTPUT/best: a loadable model of the step whose validation scored best, with best.json (step, numbers,
    score); swapped in atomically like the checkpoint. Choose with this seed, report with another."""
    tmp = output / ".best.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "best.json").write_text(json.dumps({"step": row["step"], "score": selection_score(row["validation"]),
                                               "validation": row["validation"]}, indent=1))
    final = output / "best"
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _agreed(accelerator, value: float, reduction: str) -> float:
    """`value` reduced over the processes ("max" or "sum"), so that all take the same decision; with one process
    the plain value (a reduce on a device tensor would make the host wait for the GPU at every step)."""
    if accelerator.num_processes == 1:
        return value
    return float(accelerator.reduce(torch.tensor(value, device=accelerator.device), reduction))


def _ignore_ctrl_c(worker_id: int) -> None:
    """Loader workers leave Ctrl-C to the main process, which finishes its step and saves (StopRequest)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StopRequest:
    """Ctrl-C during training: the first asks the loop to finish its step, save and stop (so `--resume` loses
    nothing); a second one interrupts at once. Only in the main thread (signals cannot be caught elsewhere)."""

    def __init__(self):
        self.requested, self._previous = False, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nkptllm train: Ctrl-C: saving after this step (press again to stop at once)", file=sys.stderr)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


# what a resumed run may change: how long it trains, how often it logs, saves and validates, how it loads data
RESUMABLE_CHANGES = {"steps", "time_budget", "time_limit", "stop_after", "log_every", "save_every", "validate_every",
                     "validate_objects", "num_workers"}


def check_same_run(config: TrainConfig, output: Path) -> None:
    """ValueError when `output/run.json` was written by a run with other model, data or training settings than
    `config` (e.g. a new seed or task mix pointed at an old run's folder): resuming would continue that run under
    settings it never had. Only `RESUMABLE_CHANGES` (budget, logging, saving, validation) may differ."""
    path = output / "run.json"
    if not path.is_file():
        return
    before = json.loads(path.read_text())
    now = json.loads(json.dumps({"model": config.model, "data": config.data, "train": config.train.__dict__}, default=str))
    changed = [key for key in ("model", "data") if before.get(key) != now[key]]
    earlier = before.get("train", {})  # a setting added since that run was written is not a change
    changed += [f"train.{k}" for k in sorted(set(now["train"]) & set(earlier))
                if k not in RESUMABLE_CHANGES and earlier[k] != now["train"][k]]
    if changed:
        raise ValueError(f"{output} holds a run with other settings ({', '.join(changed)}): resume it with its own "
                         f"config, or start the new one in another --output")


def train(config: TrainConfig, output, resume: bool = False, progress: bool = True, clock=time.time) -> dict:
    """Run (or resume) training; returns {"step", "loss", "output"}. `clock` (seconds) is for tests."""
    settings = config.train
    output = Path(output)
    if settings.time_budget is not None and settings.time_budget <= 0:
        raise ValueError(f"time_budget must be a positive number of seconds, not {settings.time_budget}")
    if settings.length_buckets < 1:
        raise ValueError(f"length_buckets must be at least 1, not {settings.length_buckets}")
    # Batches without keypoint prompts (text-only) leave the prompt modules without gradients: DDP must allow it.
    # Every process runs every step of the schedule (the loader is ours, not accelerate's), so the scheduler
    # steps once per step, not once per process (accelerate's default assumes a prepared, split loader).
    accelerator = Accelerator(mixed_precision=settings.mixed_precision, cpu=not torch.cuda.is_available(),
                              step_scheduler_with_optimizer=False,
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    checkpoint = output / "checkpoint"
    if resume and not (checkpoint / "step.json").is_file():
        raise ValueError(f"--resume: no checkpoint in {checkpoint}")
    if not resume and (output / "metrics.jsonl").exists():
        raise ValueError(f"{output} already holds a run: pass --resume to continue it, or another --output")
    if resume:
        check_same_run(config, output)

    torch.manual_seed(settings.seed)
    model, processor = build_model(config.model, tokenizer_text=tokenizer_corpus())
    mixture = build_mixture(config, processor)
    optimizer = build_optimizer(model, settings)
    spent = {"fraction": 0.0}  # of time_budget, set by the loop before each scheduler step
    scheduler = build_scheduler(optimizer, settings, spent)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    start, trained_before = 0, 0.0
    if resume:
        accelerator.load_state(str(checkpoint))
        state = json.loads((checkpoint / "step.json").read_text())
        start, trained_before = state["step"], float(state.get("trained_seconds", 0.0))
    # a resumed run whose budget is spent has nothing left to do (the loop would train one more step)
    end = start if settings.time_budget is not None and trained_before >= settings.time_budget else settings.steps
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        trainable, total = count_parameters(accelerator.unwrap_model(model))
        (output / "run.json").write_text(json.dumps({
            "config": str(config.path), "model": config.model, "data": config.data, "train": settings.__dict__,
            "parameters": {"trainable": trainable, "total": total}, "processes": accelerator.num_processes,
            "device": str(accelerator.device)}, indent=1, default=str))

    prefix_length = {"shared_prefix_length": len(processor.encode_prefix()), "length_buckets": settings.length_buckets} \
        if settings.shared_prefix else {}
    loader = DataLoader(mixture, batch_sampler=StepSampler(start, end, settings.images_per_step,
                                                           accelerator.process_index, accelerator.num_processes),
                        collate_fn=mixture.collate, num_workers=settings.num_workers, worker_init_fn=_ignore_ctrl_c,
                        persistent_workers=False, prefetch_factor=4 if settings.num_workers else None,
                        pin_memory=accelerator.device.type == "cuda")  # page-locked: the copies below overlap compute
    bar = None
    if progress and accelerator.is_main_process:
        from tqdm.auto import tqdm

        bar = tqdm(total=settings.steps, initial=start, desc="train", dynamic_ncols=True)
    model.train()
    began, seen, window, last_loss = clock(), 0, [], math.nan

    def trained() -> float:  # seconds of training in all, this run's and the resumed ones'
        return trained_before + clock() - began

    # seconds the loop waited for the loader since the last log line: near 0 when the device (or the host
    # queueing its work) is the limit, most of the time when rendering/collating is
    waited, since, ready = 0.0, clock(), clock()
    step = start
    metrics = output / "metrics.jsonl"
    if accelerator.is_main_process and metrics.is_file():  # a crash after the last save logged steps that rerun now
        lines = metrics.read_text().splitlines(keepends=True)
        kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= start]
        if len(kept) != len(lines):
            metrics.write_text("".join(kept))
    with StopRequest() as stop:  # Ctrl-C: finish the step, save, stop
        for step, batch in enumerate(loader, start=start + 1):
            waited += clock() - ready
            batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
            with accelerator.autocast():
                loss = model(**batch, **prefix_length).loss
            accelerator.backward(loss)
            if settings.grad_clip:
                accelerator.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            if settings.time_budget is not None:
                spent["fraction"] = _agreed(accelerator, trained(), "max") / settings.time_budget
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            window.append(loss.detach())
            seen += batch["input_ids"].shape[0]
            out_of_time = stop.requested or (settings.time_limit is not None and clock() - began > settings.time_limit)
            out_of_time = _agreed(accelerator, float(out_of_time), "sum") > 0  # one Ctrl-C'd process stops them all
            out_of_time = out_of_time or spent["fraction"] >= 1.0  # already the same on every process
            out_of_time = out_of_time or (settings.stop_after is not None and step >= settings.stop_after)
            if step % settings.log_every == 0 or step == settings.steps or out_of_time:  # the last step is always logged
                mean = accelerator.reduce(torch.stack(window).mean(), reduction="mean")
                last_loss, window = float(mean), []
                if accelerator.is_main_process:
                    now = clock()
                    row = {"step": step, "loss": round(last_loss, 5), "lr": scheduler.get_last_lr()[0],
                           "elapsed": round(trained_before + now - began, 2), "sequences_per_s": round(seen / max(now - began, 1e-9), 2),
                           "data_wait": round(waited / max(now - since, 1e-9), 3)}
                    waited, since = 0.0, now
                    with metrics.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    if bar:
                        bar.set_postfix(loss=f"{last_loss:.4f}")
            if bar:
                bar.update(1)
            if settings.validate_every and (step % settings.validate_every == 0 or out_of_time):
                paused = clock()
                if accelerator.is_main_process:  # held-out numbers into the curve: judge the run by them, not the loss
                    row = validation_row(accelerator.unwrap_model(model), processor, step, settings.validate_objects,
                                         trained(), world_version(config.data))
                    with metrics.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    if selection_score(row["validation"]) > _best_so_far(output):
                        _save_best(accelerator.unwrap_model(model), processor, output, row)
                accelerator.wait_for_everyone()
                began += clock() - paused  # validation time is not training time (budget, cosine, sequences/s)
            if step % settings.save_every == 0 or step == settings.steps or out_of_time:
                _save(accelerator, model, processor, output, step, _agreed(accelerator, trained(), "max"))
            if out_of_time:
                break
            ready = clock()
    if bar:
        bar.close()
    # Every process reports a checksum of its weights: data-parallel replicas must agree exactly.
    local = torch.tensor([float(sum(p.detach().double().sum() for p in accelerator.unwrap_model(model).parameters()))],
                         dtype=torch.float64, device=accelerator.device)
    checksums = accelerator.gather(local).tolist()
    if accelerator.is_main_process:
        (output / "final_state.json").write_text(json.dumps({"step": step, "weight_checksums": checksums}))
    # the process group goes before the process does (a worker still ends with os._exit: evaluation.cli, where
    # gloo's abort at interpreter exit is described; destroying the group alone did not stop it)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    if step == start:  # nothing ran (already finished): keep the files as they are
        return {"step": step, "loss": None, "output": str(output)}
    return {"step": step, "loss": last_loss, "output": str(output)}
