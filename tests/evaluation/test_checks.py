"""Issue #6.4: `kptllm eval` checks everything before it writes run.json or loads the model."""

import shutil
import sys

import pytest

from evaluation.cli import main
from evaluation.runner import checkpoint_hash, run_benchmark
from tests.realdata import REAL

COCO_JSON = REAL / "coco" / "test_coco.json"


@pytest.fixture
def partial_coco(tmp_path):
    """The COCO test file with only one of its four images on disk."""
    folder = tmp_path / "partial"
    folder.mkdir()
    shutil.copy(COCO_JSON, folder / "test_coco.json")
    shutil.copy(REAL / "coco" / "000000000785.jpg", folder)
    return folder


class _Never:
    """A predictor that must not be asked anything."""

    def set_image(self, *args, **kwargs):
        raise AssertionError("the model was used")


def _refused(tmp_path, match, **kwargs):
    out = tmp_path / "out"
    args = dict(model="m", benchmark="coco", annotations=str(COCO_JSON), images=str(REAL / "coco"), out=str(out),
                predictor=_Never(), progress=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        run_benchmark(**args)
    assert not (out / "run.json").exists()


def test_missing_images_are_refused_unless_allowed(tmp_path, partial_coco):
    _refused(tmp_path, r"need images not found .*--allow-missing", annotations=str(partial_coco / "test_coco.json"),
             images=str(partial_coco))
    from tests.evaluation.test_runner import _Oracle

    record = run_benchmark("oracle", "coco", str(partial_coco / "test_coco.json"), str(partial_coco),
                           str(tmp_path / "ok"), predictor=_Oracle(COCO_JSON), progress=False, allow_missing=True)
    assert record["units_evaluated"] == record["counts"]["instances"] < record["units_total"]
    assert record["images_missing"] == 3 and record["name"] == "oracle"
    assert record["annotations_label"].startswith("test_coco.json (") and "instances, sha256 " in record["annotations_label"]


def test_default_name_is_folder_plus_short_hash(tmp_path):
    from evaluation.runner import default_name

    (tmp_path / "final").mkdir()
    assert default_name(str(tmp_path / "final") + "/", "0123456789" * 6 + "abcd") == "final 01234567"
    assert default_name("org/model", None) == "org/model"


def test_mp100_missing_images_fail_up_front_with_a_file_name(tmp_path):
    from tests.realdata import MP100_SPLIT1_TEST

    _refused(tmp_path, r"need images not found .*e\.g\. \S+\.jpg", benchmark="mp100",
             annotations=str(MP100_SPLIT1_TEST), images=str(tmp_path / "nowhere"), episodes=1)


def test_shots_and_keypoint_names_are_checked(tmp_path):
    _refused(tmp_path, "shots must be 1 to 5", shots=0)
    _refused(tmp_path, "shots must be 1 to 5", shots=6)
    _refused(tmp_path, r"expects the 14 CarFusion keypoints", benchmark="carfusion")  # a 17-keypoint file
    _refused(tmp_path, r"expects the 17", benchmark="ap10k")  # COCO names are not AP-10K's


def test_every_real_file_passes_the_name_check():
    from evaluation.benchmarks import GENERIC
    from evaluation.checks import check_keypoint_names
    from evaluation.data import KeypointDataset

    for benchmark, path in [("coco", COCO_JSON), ("humanart", REAL / "humanart" / "test_humanart.json"),
                            ("ap10k", REAL / "ap10k" / "test_ap10k.json"),
                            ("macaque", REAL / "macaque" / "test_macaque.json"),
                            ("animal_kingdom", REAL / "ak" / "test_animalkingdom.json")]:
        check_keypoint_names(benchmark, KeypointDataset.load(path), GENERIC[benchmark][0])


def test_metric_libraries_are_imported_before_inference(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m.startswith(("xtcocotools", "matplotlib"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    _refused(tmp_path, r"xtcocotools, which cannot import 'matplotlib'")


def test_cli_model_folder_not_found(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["eval", "--model", str(tmp_path / "none"), "--benchmark", "coco", "--annotations", str(COCO_JSON),
                 "--images", str(REAL / "coco"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model folder not found" in err and not (out / "run.json").exists()
    assert main(["eval", "--model", str(tmp_path), "--benchmark", "coco", "--annotations", str(COCO_JSON),
                 "--images", str(REAL / "coco"), "--shots", "0", "--out", str(out)]) == 2
    assert not (out / "run.json").exists()


def test_checkpoint_hash_is_cached(tmp_path, monkeypatch):
    import evaluation.checks as checks

    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights" * 1000)
    calls = []
    real = checks.file_sha256
    monkeypatch.setattr(checks, "file_sha256", lambda p: calls.append(p) or real(p))
    monkeypatch.setenv("KPTLLM_CACHE_DIR", str(tmp_path / "cache"))
    first = checkpoint_hash(str(folder))
    assert checkpoint_hash(str(folder)) == first and len(calls) == 1
    (folder / "model.safetensors").write_bytes(b"other" * 1000)  # new size and mtime: hashed again
    assert checkpoint_hash(str(folder)) != first and len(calls) == 2
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("KPTLLM_CACHE_DIR", str(blocker / "cache"))  # cannot be created: no caching, no error
    assert checkpoint_hash(str(folder)) == checkpoint_hash(str(folder)) and len(calls) == 4
