"""The locked environment: lock file, conda file and pyproject ranges agree."""
import re
import tomllib

from packaging.requirements import Requirement
from packaging.version import Version

REQUIRED = {"torch", "torchvision", "torchaudio", "transformers", "soundfile", "jupyterlab",
            "ipykernel", "ipywidgets", "papermill", "nbval", "nbformat", "nbconvert",
            "matplotlib", "scikit-learn", "visdom", "tornado", "tqdm", "safetensors", "gguf",
            "accelerate", "pycocoevalcap", "peft", "pytest", "uv", "pip"}


def _pins(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(?:-\s+)?([A-Za-z0-9_.\-]+)==([^\s#]+)", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_lock_pins_the_working_set(repo):
    lock = _pins((repo / "requirements.lock").read_text())
    assert REQUIRED <= set(lock), REQUIRED - set(lock)
    assert lock["torch"] == "2.14.1" and lock["torchvision"] == "0.29.1" and lock["torchaudio"] == "2.11.0"
    assert lock["visdom"] == "0.2.4" and Version(lock["tornado"]) < Version("6.6")
    assert Version(lock["transformers"]).major == 5
    assert (repo / "build-constraints.txt").read_text().strip() == "setuptools<82"


def test_environment_yml_agrees_with_lock(repo):
    lock = _pins((repo / "requirements.lock").read_text())
    env_text = (repo / "environment.yml").read_text()
    assert "python=3.11" in env_text
    assert _pins(env_text) == lock


def test_pyproject_ranges_admit_lock_and_gpu_machines(repo):
    deps = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = {Requirement(d).name.lower(): Requirement(d) for d in deps}
    lock = _pins((repo / "requirements.lock").read_text())
    for name, req in reqs.items():
        assert name in lock, f"{name} is a dependency but not locked"
        assert req.specifier.contains(lock[name], prereleases=True), (name, lock[name], req)
    gpu = {"torch": "2.11.0", "torchvision": "0.26.0", "transformers": "5.17.0"}
    for name, version in gpu.items():
        assert reqs[name].specifier.contains(version), (name, version)


def test_installed_versions_match_lock(repo):
    from importlib.metadata import version
    lock = _pins((repo / "requirements.lock").read_text())
    for name in ("torch", "torchvision", "torchaudio", "transformers", "papermill", "visdom"):
        assert version(name) == lock[name], name
