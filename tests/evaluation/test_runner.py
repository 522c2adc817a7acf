"""`kptllm eval` end to end on real images: a valid record, resumable with identical numbers; `kptllm results`."""

import json

import pytest

from evaluation.cli import main
from evaluation.runner import run_benchmark
from tests.helpers import Oracle
from tests.realdata import REAL

COCO_JSON = REAL / "coco" / "test_coco.json"


@pytest.fixture(scope="module")
def mp100_like(tmp_path_factory):
    """An MP-100-style file (20 instances of one category, 0-based skeleton) built on the real COCO images."""
    data = json.loads(COCO_JSON.read_text())
    people = [a for a in data["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0]
    anns = [dict(people[i % len(people)], id=1000 + i) for i in range(20)]
    category = dict(data["categories"][0], skeleton=[[a - 1, b - 1] for a, b in data["categories"][0]["skeleton"]])
    out = tmp_path_factory.mktemp("mp100") / "mp100_split1_test.json"
    out.write_text(json.dumps({"images": data["images"], "annotations": anns, "categories": [category]}))
    return out


def _record_keys(record):
    assert {"model", "checkpoint_sha256", "benchmark", "protocol", "task", "metrics", "counts", "per_category",
            "elapsed_s", "hardware", "date", "code_version"} <= set(record)


def test_text_benchmark_record_and_resume(tiny_dir, tmp_path, monkeypatch):
    full = run_benchmark(str(tiny_dir), "coco", str(COCO_JSON), str(REAL / "coco"), str(tmp_path / "full"),
                         limit=6, chunk_size=2, progress=False)
    _record_keys(full)
    assert full["checkpoint_sha256"] and len(full["checkpoint_sha256"]) == 64
    assert set(full["metrics"]) >= {"PCK@0.2", "AP", "AR"} and full["counts"]["instances"] == 6
    assert len(full["per_keypoint"]) == 17
    predictions = json.loads((tmp_path / "full" / "predictions.json").read_text())
    assert len(predictions) == 6 and all(len(p["keypoints"]) == 51 for p in predictions)
    assert json.loads((tmp_path / "full" / "record.json").read_text())["metrics"] == full["metrics"]

    # kill a run half-way, then start it again
    import evaluation.runner as runner

    calls = {"n": 0}
    real_finish = runner.finish_unit

    def dying_finish(*args):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_finish(*args)

    monkeypatch.setattr(runner, "finish_unit", dying_finish)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(str(tiny_dir), "coco", str(COCO_JSON), str(REAL / "coco"), str(tmp_path / "resumed"),
                      limit=6, chunk_size=2, progress=False)
    assert len(list((tmp_path / "resumed" / "chunks").glob("*.json"))) == 1
    monkeypatch.setattr(runner, "finish_unit", real_finish)
    resumed = run_benchmark(str(tiny_dir), "coco", str(COCO_JSON), str(REAL / "coco"), str(tmp_path / "resumed"),
                            limit=6, chunk_size=2, progress=False)
    assert resumed["chunks_reused"] == 1 and resumed["chunks"] == 3
    for key in ("metrics", "counts", "per_keypoint", "per_category"):
        assert resumed[key] == full[key], key
    with pytest.raises(ValueError, match="other settings"):
        run_benchmark(str(tiny_dir), "coco", str(COCO_JSON), str(REAL / "coco"), str(tmp_path / "resumed"),
                      limit=5, chunk_size=2, progress=False)

    # a chunk damaged on disk (a crash mid-copy, an edit) is computed again with a warning, same numbers
    chunk = tmp_path / "resumed" / "chunks" / "00001.json"
    for damage in ('{"predictions": [{"ke', '{"predictions": 5, "elapsed_s": 1}'):
        chunk.write_text(damage)
        with pytest.warns(UserWarning, match="00001.json is damaged"):
            again = run_benchmark(str(tiny_dir), "coco", str(COCO_JSON), str(REAL / "coco"), str(tmp_path / "resumed"),
                                  limit=6, chunk_size=2, progress=False)
        assert again["chunks_reused"] == 2 and again["metrics"] == full["metrics"]
    (tmp_path / "resumed" / "run.json").write_text("")
    with pytest.raises(ValueError, match="run.json is not valid json"):
        run_benchmark(str(tiny_dir), "coco", str(COCO_JSON), str(REAL / "coco"), str(tmp_path / "resumed"),
                      limit=6, chunk_size=2, progress=False)


def test_trained_model_scores_what_it_learned(trained, tmp_path, coco_person):
    predictor, visible = trained
    record = run_benchmark("trained-tiny", "coco", str(COCO_JSON), str(REAL / "coco"), str(tmp_path),
                           limit=1, predictor=predictor, progress=False)
    learned = [name for name, _ in visible]
    assert all(record["per_keypoint"][name] == 1.0 for name in learned)  # PCK@0.2 of the memorised keypoints
    assert record["metrics"]["PCK@0.2"] >= len(learned) / 17


def test_mp100_visual_and_semantic(tiny_dir, tmp_path, mp100_like):
    visual = run_benchmark(str(tiny_dir), "mp100", str(mp100_like), str(REAL / "coco"), str(tmp_path / "v"),
                           shots=1, episodes=1, limit=4, progress=False)
    _record_keys(visual)
    assert set(visual["metrics"]) == {"PCK@0.05", "PCK@0.1", "PCK@0.15", "PCK@0.2", "PCK@0.25", "mPCK", "pck@0.2"}
    assert all(0 <= v <= 1 for v in visual["metrics"].values()) and visual["counts"]["queries"] == 4
    assert "1-shot" in visual["protocol"]
    semantic = run_benchmark(str(tiny_dir), "mp100", str(mp100_like), str(REAL / "coco"), str(tmp_path / "s"),
                             task="semantic", limit=2, progress=False)
    assert set(semantic["metrics"]) == {"accuracy"} and semantic["counts"]["keypoints"] > 0
    kinds = semantic["errors"]
    assert sum(kinds.values()) == pytest.approx(1.0) and kinds["correct"] == pytest.approx(semantic["metrics"]["accuracy"])


def test_semantic_scores_per_keypoint_and_category_from_known_answers():
    """Two categories share a keypoint name: per-keypoint accuracy and confusions keep them apart."""
    from types import SimpleNamespace

    from evaluation.benchmarks import _score_semantic

    category = {1: "person", 2: "quadruped"}
    dataset = SimpleNamespace(annotation=lambda ann_id: ann_id, category_of=lambda ann_id: SimpleNamespace(name=category[ann_id]))
    bench = SimpleNamespace(units=[{"ann_id": 1}, {"ann_id": 2}], dataset=dataset)
    predictions = [{"predicted": ["nose", "right eye", "right eye"], "expected": ["nose", "left eye", "left eye"]},
                   {"predicted": ["left eye", "left eye", None], "expected": ["nose", "left eye", "right eye"]}]
    scores = _score_semantic(bench, predictions)
    assert scores["metrics"]["accuracy"] == pytest.approx(2 / 6)
    assert scores["per_keypoint"] == {"person/nose": 1.0, "person/left eye": 0.0, "quadruped/nose": 0.0,
                                      "quadruped/left eye": 1.0, "quadruped/right eye": 0.0}
    assert scores["per_category"]["person"] == {"accuracy": pytest.approx(1 / 3), "keypoints": 3}
    assert scores["errors"] == pytest.approx({"correct": 2 / 6, "mirror": 2 / 6, "front_back": 0.0, "other": 1 / 6,
                                              "unparsed": 1 / 6})
    assert scores["confusions"][0] == {"category": "person", "expected": "left eye", "predicted": "right eye", "count": 2}
    assert {"category": "quadruped", "expected": "nose", "predicted": "left eye", "count": 1} in scores["confusions"]


def test_keypoints_outside_image_or_crop_are_not_prompted(tiny_dir, tmp_path, mp100_like):
    data = json.loads(mp100_like.read_text())
    for ann in data["annotations"]:
        kpts = ann["keypoints"]
        kpts[0:3] = [-500.0, -500.0, 2]  # labelled, but outside the image
        labelled = [i for i in range(1, len(kpts) // 3) if kpts[3 * i + 2] > 0]
        kpts[3 * labelled[0]:3 * labelled[0] + 2] = [ann["bbox"][0] + 3 * ann["bbox"][2], ann["bbox"][1]]  # outside the crop
        ann["keypoints"] = kpts
    odd = tmp_path / "mp100_split1_test.json"
    odd.write_text(json.dumps(data))
    semantic = run_benchmark(str(tiny_dir), "mp100", str(odd), str(REAL / "coco"), str(tmp_path / "s"),
                             task="semantic", limit=2, progress=False)
    chunk = json.loads(next((tmp_path / "s" / "chunks").glob("*.json")).read_text())["predictions"]
    assert all(0 not in p["indices"] for p in chunk) and semantic["counts"]["keypoints"] > 0
    visual = run_benchmark(str(tiny_dir), "mp100", str(odd), str(REAL / "coco"), str(tmp_path / "v"),
                           episodes=1, limit=2, progress=False)
    assert visual["counts"]["queries"] == 2


def test_bad_runs(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark"):
        run_benchmark(str(tiny_dir), "imagenet", str(COCO_JSON), str(REAL / "coco"), str(tmp_path))
    with pytest.raises(ValueError, match="supports tasks"):
        run_benchmark(str(tiny_dir), "coco", str(COCO_JSON), str(REAL / "coco"), str(tmp_path), task="visual")
    with pytest.raises(ValueError, match="limit"):
        run_benchmark(str(tiny_dir), "coco", str(COCO_JSON), str(REAL / "coco"), str(tmp_path), limit=0)
    with pytest.raises(ValueError, match="chunk size"):
        run_benchmark(str(tiny_dir), "coco", str(COCO_JSON), str(REAL / "coco"), str(tmp_path), chunk_size=0)
    with pytest.raises(ValueError, match="not found"):
        run_benchmark(str(tiny_dir), "coco", str(tmp_path / "none.json"), str(REAL / "coco"), str(tmp_path))
    with pytest.raises(ValueError, match="allow-missing"):
        run_benchmark(str(tiny_dir), "coco", str(COCO_JSON), str(tmp_path / "no-images"), str(tmp_path))
    with pytest.raises(ValueError, match="shots must be 1 to 5"):  # the predictor's MAX_SHOTS, on both paths
        run_benchmark(str(tiny_dir), "coco", str(COCO_JSON), str(REAL / "coco"), str(tmp_path / "six"), shots=6)
    assert not (tmp_path / "six").exists()
    with pytest.raises(ValueError, match="no work units"):
        run_benchmark(str(tiny_dir), "coco", str(COCO_JSON), str(tmp_path / "no-images"), str(tmp_path),
                      allow_missing=True)


def test_cli_episodes(capsys, tmp_path):
    from tests.realdata import MP100_SPLIT1_TEST

    mp100 = str(MP100_SPLIT1_TEST)
    assert main(["episodes", "--annotations", mp100, "--shots", "5", "--episodes", "3"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3 * 20 and all(len(e["support_ids"]) == 5 and len(e["query_ids"]) == 15 for e in lines)
    assert main(["episodes", "--annotations", mp100, "--shots", "5", "--episodes", "3"]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == lines
    assert main(["episodes", "--annotations", str(tmp_path / "no.json"), "--shots", "1"]) == 2
    assert main(["episodes", "--annotations", mp100, "--shots", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err


def test_cli_eval_and_results(tiny_dir, tmp_path, capsys):
    out = tmp_path / "results" / "coco-tiny"
    assert main(["eval", "--model", str(tiny_dir), "--benchmark", "coco", "--annotations", str(COCO_JSON),
                 "--images", str(REAL / "coco"), "--limit", "2", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["benchmark"] == "coco" and "AP" in summary["metrics"]
    assert main(["results", "--benchmark", "coco", "--results", str(tmp_path / "results")]) == 0
    printed = capsys.readouterr().out
    assert "KptLLM++" in printed and tiny_dir.name in printed and "78.1" in printed
    assert main(["results", "--csv", "--results", str(tmp_path / "results")]) == 0
    csv = capsys.readouterr().out
    assert csv.startswith("source,") and "measured" in csv and "paper" in csv
    assert main(["results", "--benchmark", "nope"]) == 2
    assert main(["eval", "--model", str(tmp_path / "none"), "--benchmark", "coco", "--annotations", str(COCO_JSON),
                 "--images", str(REAL / "coco"), "--out", str(tmp_path / "x")]) == 2


class _Oracle(Oracle):
    """Answers with the ground truth of the instance whose box it was given."""

    def __init__(self, dataset_path):
        from evaluation.data import KeypointDataset

        super().__init__()
        self.by_box = {tuple(a.bbox): a for a in KeypointDataset.load(dataset_path).annotations}

    def truth(self, request):
        return self.by_box[tuple(request.bbox)].keypoints


@pytest.mark.parametrize("benchmark, path", [("coco", COCO_JSON), ("humanart", REAL / "humanart" / "test_humanart.json"),
                                             ("ap10k", REAL / "ap10k" / "test_ap10k.json")])
def test_oracle_predictions_score_perfectly(tmp_path, benchmark, path):
    """The runner's COCO results and ground truth assembly: GT answers give AP = AR = PCK = 1."""
    record = run_benchmark("oracle", benchmark, str(path), str(path.parent), str(tmp_path),
                           predictor=_Oracle(path), progress=False)
    assert record["metrics"]["PCK@0.2"] == record["metrics"]["pck@0.2"] == 1.0
    assert record["metrics"]["AP"] == pytest.approx(1.0) and record["metrics"]["AR"] == pytest.approx(1.0)
    per_keypoint = list(record["per_keypoint"].values())
    assert all(v in (1.0, -1.0) for v in per_keypoint) and per_keypoint.count(1.0) > 10  # -1: never labelled


def test_cli_eval_names_the_path_it_cannot_use(tiny_dir, tmp_path, capsys):
    """An --annotations folder or an --out that is a file: the OS's reason and the path (not "cannot load model")."""
    taken = tmp_path / "taken"
    taken.write_text("x")
    for extra in (["--annotations", str(tmp_path), "--out", str(tmp_path / "o1")],
                  ["--annotations", str(COCO_JSON), "--out", str(taken)]):
        assert main(["eval", "--model", str(tiny_dir), "--benchmark", "coco", "--images", str(REAL / "coco"),
                     "--limit", "1", *extra]) == 2
        err = capsys.readouterr().err
        assert "cannot load model" not in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_the_dashboards_command_reproduces_the_record(tiny_dir, tmp_path, mp100_like):
    """A record keeps what `kptllm eval` needs to run it again (images, episodes, seed, --no-constraints): the
    Benchmarks tab's command, with the server's paths (the tab shows them shortened), gives the same numbers;
    a constrained run reads differently."""
    import shlex

    from demo.benchmarks import load_results

    results = tmp_path / "results"
    record = run_benchmark(str(tiny_dir), "mp100", str(mp100_like), str(REAL / "coco"), str(results / "v"),
                           shots=1, episodes=2, seed=5, limit=3, constrained=False, progress=False)
    assert (record["images"], record["episodes"], record["seed"], record["constrained"]) == (str(REAL / "coco"), 2, 5, False)
    command = load_results(results, public=False).query("source == 'measured'")["command"].iloc[0]
    shown = load_results(results).query("source == 'measured'")["command"].iloc[0]
    assert str(tmp_path) not in shown and shown.replace("--images tests/data/real/coco", "") != shown
    assert "--no-constraints" in command and "--episodes 2" in command and "--seed 5" in command
    argv = shlex.split(command)
    assert argv[:2] == ["kptllm", "eval"]
    argv[argv.index("--out") + 1] = str(tmp_path / "again")
    assert main(argv[1:]) == 0
    again = json.loads((tmp_path / "again" / "record.json").read_text())
    assert again["metrics"] == record["metrics"] and again["constrained"] is False
    constrained = run_benchmark(str(tiny_dir), "mp100", str(mp100_like), str(REAL / "coco"), str(results / "c"),
                                shots=1, episodes=2, seed=5, limit=3, progress=False)
    commands = set(load_results(results, public=False).query("source == 'measured'")["command"])
    assert len(commands) == 2 and constrained["constrained"] is True
