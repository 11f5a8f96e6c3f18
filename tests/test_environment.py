"""The locked environment: lock file, conda file and pyproject ranges agree."""
import re
import tomllib

from packaging.requirements import Requirement

def _pins(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(?:-\s+)?([A-Za-z0-9_.\-]+)==([^\s#]+)", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_environment_yml_agrees_with_lock(repo):
    lock = _pins((repo / "requirements.lock").read_text())
    env_text = (repo / "environment.yml").read_text()
    assert "python=3.11" in env_text
    assert _pins(env_text) == lock


def test_pyproject_ranges_admit_lock_and_gpu_machines(repo):
    """Every dependency and extra (dev tools included: `make test` installs the lock) is locked, in range."""
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    reqs = {Requirement(d).name.lower(): Requirement(d) for d in deps}
    lock = _pins((repo / "requirements.lock").read_text())
    for name, req in reqs.items():
        assert name in lock, f"{name} is a dependency but not locked"
        assert req.specifier.contains(lock[name], prereleases=True), (name, lock[name], req)
    gpu = {"torch": "2.11.0", "torchvision": "0.26.0", "transformers": "5.17.0"}
    for name, version in gpu.items():
        assert reqs[name].specifier.contains(version), (name, version)


def test_python_floor_matches_what_the_code_uses(repo):
    """The tests and the package use tomllib (3.11+): requires-python must not promise 3.10."""
    from packaging.specifiers import SpecifierSet
    spec = SpecifierSet(tomllib.loads((repo / "pyproject.toml").read_text())["project"]["requires-python"])
    assert "3.11" in spec and "3.10" not in spec


def test_installed_versions_match_lock(repo):
    from importlib.metadata import version
    lock = _pins((repo / "requirements.lock").read_text())
    for name in ("torch", "torchvision", "torchaudio", "transformers", "papermill", "visdom"):
        assert version(name) == lock[name], name
