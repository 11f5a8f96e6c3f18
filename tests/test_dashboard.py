"""mmcourse.dashboard: live curves in a real visdom server, offline page, fallbacks (notebook 07).

A real visdom server runs on 127.0.0.1 on a free port with a temporary env path for this
module, and is stopped by its process group at the end. No network other than loopback: the
page's JavaScript comes from visdom's static folder, filled by ``install_static`` (npm, once,
by ``make env``). Only the test marked ``network`` reaches the npm registry.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mmcourse import cli, dashboard
from mmcourse.train import fit

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy


def _get(url: str) -> tuple[int, bytes]:
    try:
        with OPENER.open(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


def _win_data(port: int, env: str, win: str) -> dict:
    """A window's content through visdom's HTTP API (what ``Visdom.get_window_data`` posts)."""
    body = json.dumps({"win": win, "eid": env}).encode()
    with OPENER.open(f"http://127.0.0.1:{port}/win_data", data=body, timeout=10) as r:
        return json.loads(r.read())


def _tiny_fit(callback, epochs: int = 2):
    """A 2-layer MLP on 64 seeded points, batch 8: 8 steps per epoch, an eval after each epoch."""
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    y = (x[:, 0] > 0).long()
    train = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    val = DataLoader(TensorDataset(x[:16], y[:16]), batch_size=16)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

    def loss_fn(m, batch):
        xb, yb = batch
        return F.cross_entropy(m(xb), yb)

    def eval_fn(m, loader):
        xb, yb = next(iter(loader))
        return {"val_loss": float(loss_fn(m, (xb, yb))), "accuracy": float((m(xb).argmax(1) == yb).float().mean())}

    return fit(model, loss_fn, train, val, epochs=epochs, eval_fn=eval_fn, monitor="accuracy", device="cpu",
               amp=False, progress=False, callback=callback)


@pytest.fixture(scope="module")
def static():
    """visdom's static files, installed by `make env`; the tests never fetch them (no network)."""
    if missing := dashboard.static_missing():
        pytest.fail(f"visdom's static files are not installed ({len(missing)} missing, e.g. {missing[0]}): run "
                    "`make env` or `.venv/bin/python -c 'from mmcourse import dashboard; dashboard.install_static()'` "
                    "(needs npm and the npm registry)")
    return dashboard.static_dir()


@pytest.fixture(scope="module")
def server(static, tmp_path_factory):
    port = dashboard.free_port()
    proc = dashboard.serve(port=port, env_path=str(tmp_path_factory.mktemp("visdom-env")), block=False)
    assert proc is not None and proc.poll() is None
    yield port
    dashboard.stop(proc)
    assert proc.poll() is not None
    with pytest.raises(ProcessLookupError):  # the whole process group is gone
        os.killpg(proc.pid, 0)
    assert not dashboard.reachable(port=port)


def test_fit_streams_curves_to_visdom(server):
    cb = dashboard.live("tiny", env="test_fit", port=server, every=3)
    assert cb.backend == "visdom"
    hist = _tiny_fit(cb)
    assert hist.step == 16
    loss = _win_data(server, "test_fit", "tiny-loss")["content"]["data"][0]
    assert loss["x"] == list(range(1, 17))
    assert loss["y"][-1] == pytest.approx(hist.train_loss[-1])
    assert len(_win_data(server, "test_fit", "tiny-lr")["content"]["data"][0]["y"]) == 16
    acc = _win_data(server, "test_fit", "tiny-eval_accuracy")["content"]["data"][0]
    assert acc["x"] == [8, 16] and acc["y"] == pytest.approx([e["accuracy"] for e in hist.evals])
    assert isinstance(cb.figure, Figure)  # the final figure is drawn in every backend


def test_training_goes_on_when_the_server_goes_away(server, capsys):
    cb = dashboard.live("gone", env="test_gone", port=server, every=2)
    assert cb.backend == "visdom"
    cb._sink.viz.port = dashboard.free_port()  # as if the server had stopped
    hist = _tiny_fit(cb, epochs=1)
    assert cb.backend == "log" and hist.step == 8 and len(cb.figure.axes[0].get_lines()[0].get_xdata()) == 8
    assert capsys.readouterr().out.count("lost the visdom server") == 1


def test_page_and_its_javascript_are_served_offline(server):
    base = f"http://127.0.0.1:{server}/"
    status, html = _get(base)
    assert status == 200
    page = html.decode()
    refs = re.findall(r"<script[^>]*\bsrc=['\"]?([^'\" >]+)", page)
    refs += re.findall(r"<link rel=\"stylesheet\" href=['\"]?([^'\" >]+)", page)
    assert any("plotly" in r for r in refs) and any("jquery" in r for r in refs) and any("MathJax" in r for r in refs)
    for ref in refs:
        url = urllib.parse.urljoin(base, ref)
        assert url.startswith(base), f"page references {url} off this server"
        status, body = _get(url)
        assert status == 200, f"{ref}: HTTP {status}"
        assert body or "/user/" in url, f"{ref} is empty"  # user/style.css: no user styles set


def test_server_listens_on_127_0_0_1_only(server):
    with pytest.raises(OSError):  # 127.0.0.2 is loopback too, but not the bound address
        socket.create_connection(("127.0.0.2", server), timeout=2).close()


def test_no_server_falls_back_to_log_lines_and_a_final_figure(capsys):
    port = dashboard.free_port()  # nothing listens there
    start = time.monotonic()
    cb = dashboard.live("fallback", port=port, every=4)
    assert time.monotonic() - start < 1.5
    assert cb.backend == "log"  # pytest is no Jupyter kernel
    hist = _tiny_fit(cb)
    out = capsys.readouterr().out
    assert "[fallback] step 4/16" in out and "[fallback] eval at step 8: val_loss" in out
    fig = cb.figure
    assert isinstance(fig, Figure) and fig._suptitle.get_text() == "fallback"
    loss_ax, lr_ax, metric_ax = fig.axes[:3]
    assert [ax.get_title() for ax in (loss_ax, lr_ax, metric_ax)] == ["loss", "learning rate (parameter group 0)", "eval metrics"]
    assert all(ax.get_xlabel() == "optimizer step" and ax.get_ylabel() for ax in fig.axes[:3])
    train_line = loss_ax.get_lines()[0]
    assert len(train_line.get_xdata()) == hist.step == 16
    assert train_line.get_ydata()[-1] == pytest.approx(hist.train_loss[-1])
    assert len(metric_ax.get_lines()[0].get_xdata()) == len(hist.evals) == 2


def test_inline_backend_updates_one_display_in_place(monkeypatch):
    import IPython.display

    shown = []

    class Handle:
        def update(self, obj):
            shown.append(("update", obj))

    def fake_display(obj, display_id=False):
        shown.append(("display", obj))
        return Handle() if display_id else None

    monkeypatch.setattr(dashboard, "in_kernel", lambda: True)
    monkeypatch.setattr(dashboard, "reachable", lambda *a, **k: False)
    monkeypatch.setattr(IPython.display, "display", fake_display)
    cb = dashboard.live("inline", every=8)
    assert cb.backend == "inline"
    _tiny_fit(cb, epochs=1)  # redraws at step 8, after the eval, at the end: one image, updated
    assert [kind for kind, _ in shown] == ["display", "update", "update"]
    assert all(obj.format == "png" and obj.data[:4] == b"\x89PNG" for _, obj in shown)


def test_reachable_gives_up_quickly_on_a_silent_server():
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        threading.Thread(target=lambda: listener.accept(), daemon=True).start()
        start = time.monotonic()
        assert not dashboard.reachable(port=listener.getsockname()[1])
        assert time.monotonic() - start < 1.5


def test_show_samples(server, capsys):
    image = torch.rand(3, 8, 8)
    dashboard.show_samples(["a cat", ("dog", image)], "s", env="test_samples", port=server)
    assert "a cat" in json.dumps(_win_data(server, "test_samples", "s-text"))
    assert _win_data(server, "test_samples", "s-img0")["title"] == "dog"
    dashboard.show_samples(["a cat", ("dog", image)], "s", port=dashboard.free_port())  # no server: printed
    assert "[s] #0: a cat" in capsys.readouterr().out


def test_cli_dashboard_subcommand():
    args = cli._parser().parse_args(["dashboard", "--port", "9001"])
    assert args.command == "dashboard" and args.port == 9001


# ---------------------------------------------------------------- model output is escaped


class FakeViz:
    """Records what would be sent to visdom."""

    def __init__(self):
        self.calls = []

    def text(self, content, **kw):
        self.calls.append(("text", content, kw))

    def image(self, img, **kw):
        self.calls.append(("image", img, kw))

    def line(self, **kw):
        self.calls.append(("line", None, kw))


EVIL = '<script>alert("x")</script>'


def test_show_samples_escapes_model_output_in_the_html_text_window(monkeypatch):
    viz = FakeViz()
    monkeypatch.setattr(dashboard, "reachable", lambda *a, **k: True)
    monkeypatch.setattr(dashboard, "_client", lambda *a, **k: viz)
    dashboard.show_samples([(f"cap {EVIL}", f"a <b>cat</b> & {EVIL}")], "s")
    (kind, content, _), = viz.calls
    assert kind == "text" and "<script>" not in content and "<b>cat" not in content
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in content and "&amp;" in content
    assert content.startswith("<ol><li><b>cap &lt;script&gt;")  # our own markup stays HTML


def test_curve_titles_with_markup_are_escaped():
    viz = FakeViz()
    sink = dashboard._VisdomSink(viz, "run <i>1</i>", "env")
    sink.line(f"eval {EVIL}", [1], [0.5], EVIL)
    opts = viz.calls[0][2]["opts"]
    assert "<script>" not in opts["title"] and "<i>" not in opts["title"] and "<script>" not in opts["ylabel"]
    assert opts["title"] == "run &lt;i&gt;1&lt;/i&gt;: eval &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"


def test_escaped_text_reaches_the_server_escaped(server):
    dashboard.show_samples([(EVIL, EVIL)], "xss", env="test_xss", port=server)
    stored = json.dumps(_win_data(server, "test_xss", "xss-text"))
    assert "<script>" not in stored and "&lt;script&gt;" in stored


# ---------------------------------------------------------------- npm: timeouts and the registry


def test_npm_pack_that_hangs_is_stopped_with_a_clear_error(tmp_path, monkeypatch):
    seen = {}

    def hang(cmd, **kw):
        seen.update(kw)
        raise subprocess.TimeoutExpired(cmd, kw["timeout"])

    monkeypatch.setenv("MMCOURSE_NPM_TIMEOUT", "5")
    monkeypatch.setattr(dashboard.shutil, "which", lambda name: "/usr/bin/npm")
    monkeypatch.setattr(dashboard.subprocess, "run", hang)
    with pytest.raises(RuntimeError) as info:
        dashboard._npm_pack(["classnames@2.2.5"], tmp_path)
    msg = str(info.value)
    assert seen["timeout"] == 5.0
    assert "npm pack did not finish within 5 s" in msg and "classnames@2.2.5" in msg
    assert "MMCOURSE_NPM_TIMEOUT" in msg and "registry" in msg


@pytest.mark.network  # the npm registry
def test_npm_pack_fetches_from_the_registry(tmp_path):
    spec, member, _ = next(f for f in dashboard.STATIC_FILES if f[0].startswith("classnames@"))
    tarball = dashboard._npm_pack([spec], tmp_path)[spec]
    with tarfile.open(tarball) as tar:
        assert tar.extractfile(f"package/{member}").read()
