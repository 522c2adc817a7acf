"""The package's import graph: no circles between kptllm's modules, no module importing another's private
names (issue 21). Imports under `if TYPE_CHECKING:` are annotations only and do not count."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("kptllm", "evaluation", "demo")


def _imports(path: Path, package: str):
    """(module imported, names) of every relative or package import in `path`, lazy ones included."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            node.body = []
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    base = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.level:
                parent = base
                for _ in range(node.level - 1):
                    parent = parent.rsplit(".", 1)[0]
                target = f"{parent}.{node.module}"
            else:
                target = node.module
            if target.split(".")[0] in PACKAGES:
                yield module.replace(".__init__", ""), target, [a.name for a in node.names]


def _graph():
    edges, private = {}, []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for module, target, names in _imports(path, package):
                edges.setdefault(module, set()).add(target)
                private += [f"{module} imports {target}.{n}" for n in names if n.startswith("_") and not n.startswith("__")]
    return edges, private


def test_no_module_imports_another_s_private_names():
    assert _graph()[1] == []


def test_kptllm_has_no_import_circles():
    edges = {m: {t for t in ts if t.startswith("kptllm")} for m, ts in _graph()[0].items() if m.startswith("kptllm")}
    circles = set()

    def walk(node, path):
        for nxt in edges.get(node, ()):
            if nxt in path:
                circles.add(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif len(path) < 12:
                walk(nxt, path + [nxt])

    for module in edges:
        walk(module, [module])
    assert not circles, sorted(circles)


def test_the_layout_shows_the_architecture():
    """The network, the decoding and the protocols live in their own sub-packages; the top level holds the
    user-facing parts. The network knows nothing of decoding, the protocols nothing of either."""
    top = {p.stem for p in (ROOT / "kptllm").glob("*.py")}
    assert top == {"__init__", "__main__", "predictor", "processor", "image", "embedded", "inference",
                   "build", "batch", "cli"}, top
    for package, members in {"modeling": {"configuration", "model", "prompt_encoder", "prompt_feature_extractor",
                                          "position", "lora", "shared_prefix"},
                             "decoding": {"engine", "generation", "static_decode", "decode_state", "constraints", "answers"},
                             "protocols": {"protocol", "checkpoints"},
                             "detection": {"base", "closed_set", "grounding_dino"}}.items():
        assert {p.stem for p in (ROOT / "kptllm" / package).glob("*.py")} - {"__init__"} == members, package
    edges = _graph()[0]
    for module, targets in edges.items():
        if module.startswith("kptllm.modeling"):
            assert not any(t.startswith(("kptllm.decoding", "kptllm.predictor")) for t in targets), (module, targets)
        if module.startswith("kptllm.protocols"):
            assert not any(t.startswith(("kptllm.modeling", "kptllm.decoding")) for t in targets), (module, targets)
        if module.startswith("kptllm.detection"):  # boxes come before the keypoint model, never from it
            assert not any(t.startswith(("kptllm.modeling", "kptllm.decoding", "kptllm.predictor")) for t in targets), \
                (module, targets)


def test_the_public_names_keep_working(tiny_dir):
    """What users import and load is unchanged by the layout: the package's names, the Auto classes on a saved
    checkpoint, the command line."""
    import subprocess
    import sys

    from transformers import AutoConfig, AutoModel

    import kptllm
    from kptllm import KeypointPredictor, KptLLMConfig, KptLLMForKeypoints, KptLLMProcessor  # noqa: F401

    assert isinstance(AutoConfig.from_pretrained(tiny_dir), KptLLMConfig)
    assert isinstance(AutoModel.from_pretrained(tiny_dir), KptLLMForKeypoints)
    assert KeypointPredictor.from_pretrained(tiny_dir, device="cpu").supported_tasks
    done = subprocess.run([sys.executable, "-m", "kptllm", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and "predict" in done.stdout, done.stderr
    assert kptllm.__version__
