"""The `kptllm` command: tiny model, predictions as JSON, user mistakes without tracebacks."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from kptllm.cli import main

IMAGE = "assets/examples/coco_000000000785.jpg"


def _run(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "kptllm", *args], capture_output=True, text=True, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


def test_tiny_then_predict_json(tmp_path):
    out = tmp_path / "tiny"
    assert _run("tiny", str(out), "--seed", "1").returncode == 0
    done = _run("predict", "--model", str(out), "--image", IMAGE, "--bbox", "280,44,218,346",
                "--keypoints", "nose, left eye", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["keypoints"]
    assert [r["name"] for r in rows] == ["nose", "left eye"]
    for row in rows:
        assert set(row) >= {"name", "x", "y", "score", "text", "parsed"} and 0 <= row["score"] <= 1
        assert row["point"] is None


def test_predict_point_and_support_in_process(tiny_dir, capsys):
    assert main(["predict", "--model", str(tiny_dir), "--image", IMAGE, "--point", "360,90.5", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["keypoints"]
    assert len(rows) == 1 and rows[0]["point"] == [360.0, 90.5]  # the asked point travels with its answer
    assert main(["predict", "--model", str(tiny_dir), "--image", IMAGE, "--support", IMAGE,
                 "--support-points", "360,90;380,80", "--support-bbox", "280,44,218,346", "--names", "a,b"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


@pytest.mark.parametrize("args, message", [
    (["--keypoints", "nose", "--point", "1,2"], "exactly one"),
    ([], "exactly one"),
    (["--point", "1"], "2 comma-separated"),
    (["--point", "a,b"], "2 comma-separated"),
    (["--point", "99999,5"], "outside"),
    (["--keypoints", " , "], "no keypoint names"),
    (["--keypoints", "nose", "--bbox", "1,2,3"], "4 comma-separated"),
    (["--support", IMAGE], "--support-points"),
    (["--support", IMAGE, "--support-points", ";"], "empty"),
    (["--keypoints", "nose", "--bbox", "0,0,3e6,3e6"], "more than 20 times"),
    (["--keypoints", "nose", "--bbox", "0,0,1e300,1e300"], "more than 20 times"),
    (["--keypoints", "nose", "--device", "foo"], "unknown device 'foo'"),
    (["--keypoints", "nose", "--device", "cuda:99"], "cuda:99"),
])
def test_user_mistakes_exit_2_without_traceback(tiny_dir, capsys, args, message):
    assert main(["predict", "--model", str(tiny_dir), "--image", IMAGE, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_files(tmp_path, tiny_dir, capsys):
    assert main(["predict", "--model", str(tmp_path / "nope"), "--image", IMAGE, "--keypoints", "nose"]) == 2
    assert "model not found" in capsys.readouterr().err
    assert main(["predict", "--model", str(tiny_dir), "--image", str(tmp_path / "x.jpg"), "--keypoints", "nose"]) == 2
    assert "image not found" in capsys.readouterr().err


def test_console_script_is_installed():
    exe = shutil.which("kptllm") or os.path.join(os.path.dirname(sys.executable), "kptllm")
    done = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "predict" in done.stdout


def test_paths_that_cannot_be_written_exit_2_with_one_line(tmp_path, capsys):
    """synth / tiny into a file or an unwritable place: the OS's reason and the path, not a traceback."""
    from evaluation.cli import main as full_main

    a_file = tmp_path / "taken"
    a_file.write_text("x")
    for argv in (["synth", "--out", str(a_file), "--n", "1", "--seed", "1"], ["tiny", str(a_file / "sub")]):
        assert full_main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and str(a_file) in err and len(err.strip().splitlines()) == 1, err


def test_argument_syntax_is_checked_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import kptllm.predictor as predictor_module

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(predictor_module.KeypointPredictor, "from_pretrained", no_load)
    assert main(["predict", "--model", str(tmp_path), "--image", IMAGE, "--keypoints", "nose", "--bbox", "1,2"]) == 2
    assert "--bbox" in capsys.readouterr().err
    assert main(["predict", "--model", str(tmp_path), "--image", IMAGE, "--keypoints", "@" + str(tmp_path / "no.txt")]) == 2
    assert "names file not found" in capsys.readouterr().err


def test_names_from_a_file_may_hold_commas(tiny_dir, tmp_path, capsys):
    names = tmp_path / "names.txt"
    names.write_text("the tip of the nose, between the eyes\n\nleft eye\n")
    assert main(["predict", "--model", str(tiny_dir), "--image", IMAGE, "--keypoints", "@" + str(names), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["keypoints"]
    assert [r["name"] for r in rows] == ["the tip of the nose, between the eyes", "left eye"]


def test_ctrl_c_is_one_line_with_the_way_back(monkeypatch, capsys, tmp_path):
    from evaluation import cli as full_cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(full_cli, "_eval", interrupted)
    argv = ["eval", "--benchmark", "coco", "--annotations", "a.json", "--images", "i", "--out", str(tmp_path / "o")]
    assert full_cli.main(argv) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the same command resumes" in err and str(tmp_path / "o") in err
