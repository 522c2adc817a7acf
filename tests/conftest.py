"""Shared fixtures: offline environment, tiny models, the real test images in tests/data/real."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "GRADIO_TEMP_DIR" not in os.environ:  # read by gradio modules at import: set before any is imported
    import atexit
    import shutil
    import tempfile

    os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="kptllm-tests-gradio-")
    atexit.register(shutil.rmtree, os.environ["GRADIO_TEMP_DIR"], ignore_errors=True)

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.realdata import real_instances  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def demo_exports(tmp_path_factory):
    """The demo's download staging folder, inside pytest's own temp tree (nothing left in the system temp)."""
    folder = tmp_path_factory.mktemp("demo-exports")
    os.environ["KPTLLM_EXPORT_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session", autouse=True)
def record_cache(tmp_path_factory):
    """Where records' KeypointWorld data is made again (evaluation.record_files), shared by the session."""
    folder = tmp_path_factory.mktemp("record-cache")
    os.environ["KPTLLM_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def tiny():
    """(model, processor) of a tiny random KptLLM++ (seed 0), in eval mode."""
    from kptllm.build import build_tiny

    model, processor = build_tiny(seed=0)
    return model.eval(), processor


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A folder holding the saved tiny model (seed 0) and its tokenizer."""
    from kptllm.build import save_tiny

    out = tmp_path_factory.mktemp("tiny")
    save_tiny(out, seed=0)
    return out


@pytest.fixture(scope="session")
def predictor(tiny_dir):
    from kptllm import KeypointPredictor

    torch.manual_seed(0)
    return KeypointPredictor.from_pretrained(tiny_dir, device="cpu")


@pytest.fixture(scope="session")
def coco_person(instances):
    """COCO 000000000785: one person with the first 7 keypoints visible."""
    return next(i for i in instances if i.dataset == "coco" and i.image.name == "000000000785.jpg")


@pytest.fixture(scope="session")
def trained(coco_person):
    """(predictor, visible keypoints) of a tiny model overfitted on `coco_person` until it reproduces its
    training answers (about 25 s on 2 idle CPU cores; see tests/helpers.py)."""
    from kptllm import KeypointPredictor
    from tests.helpers import overfit_tiny

    model, processor, visible = overfit_tiny(coco_person)
    return KeypointPredictor(model, processor), visible


@pytest.fixture(scope="session")
def instances():
    """Every annotated instance of tests/data/real (see tests/realdata.py)."""
    found = real_instances()
    assert len(found) >= 20, "tests/data/real is missing or incomplete"
    return found
