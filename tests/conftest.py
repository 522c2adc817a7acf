"""Shared fixtures: offline environment, tiny models, the real test images in tests/data/real."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.realdata import real_instances  # noqa: E402


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
