"""The demo app served once per test session on 127.0.0.1 with the embedded model, the embedded detector and a
tiny random GroundingDINO (as if a local copy were there).

Outbound network is refused while the app is built and launched: the test `test_no_outbound_network`
checks that nothing tried."""

import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "assets" / "examples"
OUTBOUND: list = []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app(tmp_path_factory):
    """(url, loaded model, demo) of a running app (its Gradio cache: tests/conftest.py sets GRADIO_TEMP_DIR)."""
    from demo.app import build_demo, launch_options
    from demo.boxes import Detectors, load_embedded_detector
    from demo.model import load_model
    from kptllm.detection import tiny_random_detector

    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else str(address)
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "localhost", "::1"):
            OUTBOUND.append(address)
            raise OSError(f"test: outbound connection to {address} refused")
        return real_connect(self, address)

    socket.socket.connect = guarded
    try:
        loaded = load_model(None, device="cpu")
        embedded, _ = load_embedded_detector("cpu")
        detectors = Detectors(embedded, tiny_random_detector(seed=0), "a tiny random GroundingDINO (tests)", "tiny")
        demo = build_demo(loaded, detectors)
        port = _free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options())
    finally:
        socket.socket.connect = real_connect
    yield f"http://127.0.0.1:{port}/", loaded, demo
    demo.close()


@pytest.fixture(scope="session")
def client(app, tmp_path_factory):
    import tempfile

    from gradio_client import Client

    # gradio_client downloads each file through an empty folder it leaves in the system temp: keep those in ours
    saved, tempfile.tempdir = tempfile.tempdir, str(tmp_path_factory.mktemp("client-temp"))
    yield Client(app[0], verbose=False, download_files=str(tmp_path_factory.mktemp("client-downloads")))
    tempfile.tempdir = saved


@pytest.fixture(scope="session")
def examples():
    import json

    return json.loads((EXAMPLES / "keypointworld.json").read_text()), json.loads(
        (EXAMPLES / "keypointworld_supports.json").read_text())
