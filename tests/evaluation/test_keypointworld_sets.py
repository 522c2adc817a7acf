"""The three KeypointWorld sets (validation, decision, test): one definition, disjoint, and records that say their set."""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluation.data import keypointworld_sets as sets
from evaluation.data.keypointworld import DEFAULT_VERSION, describe, off_centre, render_scene, write_dataset
from evaluation.data.keypointworld_sets import DECISION, SETS, TEST, VALIDATION, KeypointWorldSet, set_of

ROOT = Path(__file__).resolve().parents[2]
TRAINING_SEEDS = range(1, 31)  # the seeds the embedded model's stages used (0-20) and the next few


def _pixels(image) -> str:
    return hashlib.sha256(np.asarray(image.convert("RGB")).tobytes()).hexdigest()


def _set_scenes(kw_set, count: int, offcentre: int = 0) -> set[str]:
    """Hashes of the first `count` scenes of a set as its files hold them (and of the first `offcentre`
    off-centre copies, which `write_dataset` draws from [seed, i, 1])."""
    hashes = set()
    for i in range(count):
        scene = render_scene(np.random.default_rng([kw_set.seed, i]))
        hashes.add(_pixels(scene.image))
        if i < offcentre:
            hashes.add(_pixels(off_centre(scene, np.random.default_rng([kw_set.seed, i, 1])).image))
    return hashes


class _Rendered(Exception):
    pass


def _training_scenes(seeds, items: int) -> set[str]:
    """Hashes of every scene the keypoint training renders for items 0..items-1 of each seed (the mixture's own
    draw, stopped once its source has sampled) and of the detector training's scenes."""
    from evaluation.training.data import KeypointWorldSource, TrainingMixture
    from evaluation.training.detector import training_scene

    hashes = set()

    class Recording(KeypointWorldSource):
        def sample(self, rng, shots):
            query, supports = super().sample(rng, shots)
            hashes.update(_pixels(instance.image) for instance in (query, *supports))
            raise _Rendered  # the rest (crops, questions) renders nothing

    for seed in seeds:
        mixture = TrainingMixture(None, [Recording(off_centre_prob=0.3)], seed=seed)
        for index in range(items):
            with pytest.raises(_Rendered):
                mixture[index]
            hashes.add(_pixels(training_scene(seed, index, 0.3).image))
    return hashes


def test_each_set_has_its_seed_and_job_and_no_seed_is_shared_with_training():
    assert [s.name for s in SETS.values()] == ["validation", "decision", "test"]
    assert len({s.seed for s in SETS.values()}) == 3
    assert (VALIDATION.seed, DECISION.seed, DECISION.images) == (900_001, 424_242, 300)
    assert TEST.images >= 300
    config_seeds = set()
    for config in (ROOT / "configs").glob("*.yaml"):
        config_seeds |= {int(v) for v in re.findall(r"^\s*seed:\s*(\d+)", config.read_text(), re.M)}
    assert config_seeds and not config_seeds & {s.seed for s in SETS.values()}
    assert max(config_seeds) < min(TRAINING_SEEDS.stop, min(s.seed for s in SETS.values()))
    # gpu_run.sh draws its data seed from 1,000,000-1,999,999
    assert "1000000 + $(date +%s) % 1000000" in (ROOT / "evaluation" / "training" / "gpu_run.sh").read_text()
    assert all(not 1_000_000 <= s.seed < 2_000_000 for s in SETS.values())
    from evaluation.training.validate import HELD_OUT_SEED

    assert HELD_OUT_SEED == VALIDATION.seed  # training chooses on the validation set, read from the one definition


def test_no_scene_of_one_set_is_in_another_or_in_training():
    """Content, not only seeds: the rendered pixels of each set's first scenes (and off-centre copies) against
    each other and against every scene training items 0-3 of seeds 1-30 render."""
    found = {name: _set_scenes(s, 40, offcentre=10) for name, s in SETS.items()}
    assert all(len(h) == 50 for h in found.values())  # no two scenes of a set alike either: the hash tells them apart
    names = list(found)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not found[a] & found[b], (a, b)
    training = _training_scenes(TRAINING_SEEDS, 4)
    assert len(training) > 200
    for name, hashes in found.items():
        assert not hashes & training, name


def test_the_decision_set_keeps_the_old_records_scenes():
    """Scene i is drawn from [seed, i] whatever n: the first 60 decision images are the 60 images the records
    were scored on before (test_keypointworld pins scene 0's pixels)."""
    old = render_scene(np.random.default_rng([424242, 59]))
    assert _pixels(old.image) in _set_scenes(DECISION, 60)


def test_set_of_names_a_file_by_seed_and_size():
    assert set_of(describe(300, 424242)) == "decision"
    assert set_of(describe(300, 424242, offcentre=True)) == "decision"
    assert set_of(describe(TEST.images, TEST.seed, offcentre=True)) == "test"
    assert set_of(describe(12, 900001)) == "validation"  # drawn object by object: any number of scenes
    assert set_of(describe(60, 424242)) is None  # the old records' 60 scenes: part of the set, not the set
    assert set_of(describe(TEST.images + 1, TEST.seed)) is None
    assert set_of(describe(300, 1111)) is None
    assert set_of("my own file") is None and set_of(None) is None
    assert DECISION.description(offcentre=True) == describe(300, 424242, offcentre=True, version=DEFAULT_VERSION)
    with pytest.raises(ValueError, match="no files"):
        VALIDATION.description()


def test_write_renders_only_when_the_files_are_not_the_set(tmp_path, monkeypatch):
    small = KeypointWorldSet("small", 31, 3, "a test")
    path = small.write(tmp_path / "s")
    assert json.loads(path.read_text())["info"]["description"] == describe(3, 31)
    made = path.stat().st_mtime_ns
    calls = []
    monkeypatch.setattr(sets, "write_dataset", lambda *a, **k: calls.append(a) or path)
    assert small.write(tmp_path / "s") == path and not calls and path.stat().st_mtime_ns == made
    small.write(tmp_path / "s", offcentre=True)  # another description: made again
    assert calls == [(tmp_path / "s", 3, 31)]


def test_a_record_says_its_set(tiny_dir, tmp_path, monkeypatch):
    """`kptllm eval` writes `set` from the file's description; results tables show it and name the set."""
    from evaluation.results import load_records
    from evaluation.runner import run_benchmark

    monkeypatch.setitem(SETS, "test", KeypointWorldSet("test", TEST.seed, 3, TEST.job))  # a 3-image test set
    named = write_dataset(tmp_path / "t", 3, TEST.seed)
    other = write_dataset(tmp_path / "o", 3, 7)
    for data, out in ((named, "rt"), (other, "ro")):
        run_benchmark(str(tiny_dir), "keypointworld", str(data), str(data.parent / "images"), str(tmp_path / "runs" / out),
                      task="text", limit=2, progress=False)
    records = {out: json.loads((tmp_path / "runs" / out / "record.json").read_text()) for out in ("rt", "ro")}
    assert records["rt"]["set"] == "test" and records["ro"]["set"] is None
    table = load_records(tmp_path / "runs").drop_duplicates("record")
    by_folder = table.set_index(table["record"].map(lambda p: Path(p).parent.name))
    assert by_folder.loc["rt", "set"] == "test"
    assert by_folder.loc["rt", "dataset"] == f"KeypointWorld v2 test set, seed {TEST.seed}"  # the default world, v2
    assert pd.isna(by_folder.loc["ro", "set"]) and by_folder.loc["ro", "dataset"] == "KeypointWorld v2 seed 7"


def test_one_command_scores_the_sets_with_intervals_and_keeps_the_test_set_for_last(tiny_dir, tmp_path, monkeypatch):
    """score_records: each set's files rendered from the set's definition, six records per set in
    OUT/<set>/keypointworld-<run>, each saying its set, each with a current interval; a candidate scores the
    decision set only; a second call reuses every finished chunk."""
    from evaluation.intervals import read_interval
    from evaluation.training.score_records import RUNS, main, record_folder, score_records

    for name in ("decision", "test"):  # 3-image stand-ins of the two sets (same seeds)
        monkeypatch.setitem(SETS, name, KeypointWorldSet(name, SETS[name].seed, 3, SETS[name].job))
    out, data = tmp_path / "out", tmp_path / "data"
    main(["--model", str(tiny_dir), "--out", str(out), "--data", str(data), "--sets", "decision", "--samples", "20"])
    assert sorted(p.name for p in out.iterdir()) == ["decision"]  # a candidate: no test-set record made
    assert sorted(p.name for p in data.iterdir()) == sorted(SETS["decision"].folder_name(off) for off in (False, True))
    done = score_records(str(tiny_dir), out, data=data, samples=20, progress=False)
    folders = [record_folder(out, s, task, off) for s in ("decision", "test") for task, off in RUNS]
    assert list(done) == [str(f) for f in folders]  # decision first: the test set comes after the decision
    for folder in folders:
        record = json.loads((folder / "record.json").read_text())
        set_name = folder.parent.name
        offcentre = "offcentre" in folder.name
        assert record["set"] == set_name and record["task"] == folder.name.rsplit("-", 1)[1]
        assert record["annotations_description"] == SETS[set_name].description(offcentre)
        assert read_interval(folder, record) == done[str(folder)]
        if set_name == "decision":
            assert record["chunks_reused"] == record["chunks"]  # made by the first call, reused


def test_a_world_version_gets_its_own_files_and_records_name_it(tiny_dir, tmp_path, monkeypatch):
    """--world-version: the sets drawn by another KeypointWorld version go to their own folders (the other
    version's files are neither re-rendered nor reused), and the records' descriptions name the version."""
    from evaluation.data.keypointworld import description_version
    from evaluation.training.score_records import main, record_folder

    monkeypatch.setitem(SETS, "decision", KeypointWorldSet("decision", SETS["decision"].seed, 2, SETS["decision"].job))
    data = tmp_path / "data"
    for version in (1, 2):
        main(["--model", str(tiny_dir), "--out", str(tmp_path / f"v{version}"), "--data", str(data), "--sets", "decision",
              "--samples", "5", "--world-version", str(version)])
    assert sorted(p.name for p in data.iterdir()) == ["decision", "decision-offcentre", "decision-v2", "decision-v2-offcentre"]
    for version in (1, 2):
        files = json.loads((data / SETS["decision"].folder_name(False, version) / "annotations.json").read_text())
        assert description_version(files["info"]["description"]) == version
        record = json.loads((record_folder(tmp_path / f"v{version}", "decision", "text") / "record.json").read_text())
        assert description_version(record["annotations_description"]) == version and record["set"] == "decision"
