"""mmcourse.config and mmcourse.runtime."""
import contextlib
import os
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import pytest
import torch

from mmcourse import config, runtime


def test_profile_default_and_override(monkeypatch, capsys):
    monkeypatch.delenv("MMCOURSE_PROFILE", raising=False)
    assert config.profile() == "smoke"
    assert config.profile("full") == "full"
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("MMCOURSE_PROFILE", "full")
    assert config.profile("smoke") == "full"  # the environment wins over the notebook
    assert capsys.readouterr().out == (
        "profile 'full': MMCOURSE_PROFILE=full wins over PROFILE = 'smoke' from the parameters cell\n")
    assert config.profile("full") == "full" and config.pick(1, 2) == 2
    assert capsys.readouterr().out == ""  # nothing to say when they agree


@pytest.mark.parametrize("explicit, env, expected", [
    ("full", "smoke", ("full", "argument")),  # `make course PROFILE=full` beats an exported variable
    ("smoke", "", ("smoke", "argument")),
    (None, "full", ("full", "environment")),
    (None, "", ("smoke", "default")),
])
def test_run_profile_argument_beats_environment(monkeypatch, explicit, env, expected):
    monkeypatch.setenv("MMCOURSE_PROFILE", env)
    assert config.resolve_profile(explicit) == expected


def test_run_profile_rejects_unknown(monkeypatch):
    monkeypatch.setenv("MMCOURSE_PROFILE", "fast")
    assert config.resolve_profile("full") == ("full", "argument")  # the bad variable is unused
    with pytest.raises(ValueError, match="unknown profile 'fast'.*MMCOURSE_PROFILE"):
        config.resolve_profile(None)
    with pytest.raises(ValueError, match="unknown profile 'huge'.*--profile"):
        config.resolve_profile("huge")


def test_bad_profile_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("MMCOURSE_PROFILE", "fast")
    with pytest.raises(ValueError, match="unknown profile 'fast'.*smoke"):
        config.profile()


def test_paths_follow_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MMCOURSE_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.delenv("MMCOURSE_MODEL_DIR", raising=False)
    monkeypatch.delenv("MMCOURSE_DATA_DIR", raising=False)
    assert config.cache_dir() == tmp_path / "c"
    assert config.model_dir() == tmp_path / "c" / "models"
    assert config.data_dir() == tmp_path / "c" / "data"
    monkeypatch.setenv("MMCOURSE_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("MMCOURSE_MODEL_DIR", "~/m")
    assert config.data_dir() == tmp_path / "d"
    assert config.model_dir() == Path("~/m").expanduser()


def test_default_cache_is_under_home(monkeypatch):
    monkeypatch.delenv("MMCOURSE_CACHE_DIR", raising=False)
    assert config.cache_dir() == Path.home() / ".cache" / "mmcourse"


def test_device_selection(monkeypatch):
    monkeypatch.delenv("MMCOURSE_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else None
    dev = runtime.device()
    if expected:
        assert dev.type == expected
    assert runtime.device("cpu").type == "cpu"
    monkeypatch.setenv("MMCOURSE_DEVICE", "cpu")
    assert runtime.device().type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            runtime.device("cuda")


def test_seed_everything_repeats_python_numpy_torch():
    import random

    import numpy as np

    def draw():
        return random.random(), np.random.rand(), torch.rand(3).tolist()

    runtime.seed_everything(123)
    first = draw()
    runtime.seed_everything(123)
    assert draw() == first
    runtime.seed_everything(124)
    assert draw() != first


def test_autocast_dtype():
    assert runtime.autocast_dtype("cpu") is None
    if torch.cuda.is_available():
        assert runtime.autocast_dtype("cuda") in (torch.bfloat16, torch.float16)


PEAK_PROBE = """
import numpy as np
from mmcourse import runtime
before = runtime.memory_report("cpu")["peak_rss_mb"]
block = np.ones(256 * 2**20 // 8)  # 256 MiB, every page written
print(before, runtime.memory_report("cpu")["peak_rss_mb"])
"""


def run_in_child(code: str) -> str:
    """Run ``code`` in a fresh process; its stdout. On Linux a fork (fast: torch is imported
    already), whose peak RSS starts at the parent's current RSS, not at the parent's peak."""
    if not sys.platform.startswith("linux"):
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded fork"
        pid = os.fork()
    if pid == 0:  # child: never return into pytest
        status = 1
        try:
            with os.fdopen(write_fd, "w") as out, contextlib.redirect_stdout(out):
                try:
                    exec(code, {})
                    status = 0
                except BaseException:
                    traceback.print_exc(file=out)
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd) as lines:
        text = lines.read()
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0, text
    return text


def test_memory_report_peak_grows_by_an_allocation():
    """In a fresh process (the test process's peak is whatever earlier tests left), allocating and
    touching 256 MiB must raise the reported peak RSS by (nearly) that much."""
    before, after = map(float, run_in_child(PEAK_PROBE).split())
    assert 0.9 * 256 <= after - before <= 256 + 64, (before, after)


def test_describe_names_the_basics():
    assert set(runtime.describe()) >= {"python", "torch", "device", "autocast_dtype"}
