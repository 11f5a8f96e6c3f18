"""Live training curves (notebook 07_finetuning_recipe, "Watching training").

One line in the fit loop, no change in the notebook to switch where the curves go::

    from mmcourse.dashboard import live
    hist = fit(model, loss_fn, train_dl, val_dl, callback=live("lora"))

:func:`live` picks, once, the first backend that works (``cb.backend`` says which):

- ``"visdom"``: a visdom server answers on ``server:port`` (checked in under a second):
  the train loss, the learning rate and every eval metric stream there live
  (``make dashboard`` starts one; open http://127.0.0.1:8097).
- ``"inline"``: running in a Jupyter kernel: one matplotlib figure in the notebook,
  redrawn in place (an IPython display handle) every ``every`` steps and after each eval.
- ``"log"``: plain Python (scripts, CI): a log line every ``every`` steps and per eval.

In every case the "end" event draws the final figure (``cb.figure``) and shows it when in a
kernel, so notebooks executed by papermill (nobody watching) still contain the curves.

The visdom server offline (``make dashboard`` / :func:`serve`)
-------------------------------------------------------------
``python -m visdom.server`` first downloads its JavaScript, CSS and fonts from public CDNs and
dies without a network. :func:`serve` therefore starts it without that step
(``visdom.server.run_server.main`` with ``-bind_local``, which listens on 127.0.0.1 only;
``-hostname`` only changes the printed URL), after :func:`install_static` has put the same
files into visdom's own ``static/`` folder. They come from the npm registry, which mirrors them:
``npm pack <package>@<version>`` into a temporary folder, then the files visdom's
``server/build.py`` (``download_scripts``) wants are copied under the names it expects:

    jquery@3.1.1 (dist/jquery.min.js), bootstrap@3.3.7 (js, css, glyphicons fonts),
    react@16.2.0 and react-dom@16.2.0 (umd production builds), react-modal@3.1.10,
    plotly.js-dist-min@2.11.1 (plotly.min.js, the CDN's plotly-2.11.1.min.js), sjcl@1.0.7,
    layout-bin-packer@1.4.0, d3@3.5.17 (d3.v3.min.js), d3-selection-multi@1.0.1,
    save-svg-as-png@1.4.17, react-resizable@1.4.6 and react-grid-layout@0.16.3 (css),
    classnames@2.2.5, mathjax@2.7.5 (MathJax.js, TeX config, extensions, TeX input and
    SVG / HTML-CSS output with the TeX fonts, into js/mathjax/2.7.5/).

It needs ``npm`` (Node.js) once, is idempotent (nothing happens when every file is there) and
writes ``static/version.built`` last, so even a plain ``python -m visdom.server`` then finds
everything and skips the download.
"""
from __future__ import annotations

import contextlib
import html
import io
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from mmcourse import config
from mmcourse.fileio import atomic_path

DEFAULT_PORT = 8097
META_KEYS = {"step", "epoch", "improved", "best_metric", "best_step", "stopped_early", "total_steps"}

# (npm package spec, file inside the package, destination under visdom/static): build.py's list
STATIC_FILES: list[tuple[str, str, str]] = [
    ("jquery@3.1.1", "dist/jquery.min.js", "js/jquery.min.js"),
    ("bootstrap@3.3.7", "dist/js/bootstrap.min.js", "js/bootstrap.min.js"),
    ("bootstrap@3.3.7", "dist/css/bootstrap.min.css", "css/bootstrap.min.css"),
    *[("bootstrap@3.3.7", f"dist/fonts/glyphicons-halflings-regular.{ext}", f"fonts/glyphicons-halflings-regular.{ext}")
      for ext in ("eot", "woff2", "woff", "ttf", "svg")],
    ("bootstrap@3.3.7", "dist/fonts/glyphicons-halflings-regular.svg",
     "fonts/glyphicons-halflings-regular.svg#glyphicons_halflingsregular"),  # build.py's odd name
    ("react@16.2.0", "umd/react.production.min.js", "js/react-react.min.js"),
    ("react-dom@16.2.0", "umd/react-dom.production.min.js", "js/react-dom.min.js"),
    ("react-modal@3.1.10", "dist/react-modal.min.js", "js/react-modal.min.js"),
    ("plotly.js-dist-min@2.11.1", "plotly.min.js", "js/plotly-plotly.min.js"),
    ("sjcl@1.0.7", "sjcl.js", "js/sjcl.js"),
    ("layout-bin-packer@1.4.0", "dist/layout-bin-packer.js", "js/layout_bin_packer.js"),
    ("layout-bin-packer@1.4.0", "dist/layout-bin-packer.js.map", "js/layout-bin-packer.js.map"),
    ("d3@3.5.17", "d3.min.js", "js/d3.v3.min.js"),
    ("d3-selection-multi@1.0.1", "build/d3-selection-multi.js", "js/d3-selection-multi.v1.js"),
    ("save-svg-as-png@1.4.17", "lib/saveSvgAsPng.js", "js/saveSvgAsPng.js"),
    ("react-resizable@1.4.6", "css/styles.css", "css/react-resizable-styles.css"),
    ("react-grid-layout@0.16.3", "css/styles.css", "css/react-grid-layout-styles.css"),
    ("classnames@2.2.5", "index.js", "fonts/classnames"),
]
MATHJAX = "mathjax@2.7.5"
MATHJAX_DEST = "js/mathjax/2.7.5"
MATHJAX_KEEP = ("MathJax.js", "config/TeX-AMS-MML_HTMLorMML.js", "config/Safe.js", "extensions/",
                "jax/input/TeX/", "jax/input/MathML/", "jax/element/", "jax/output/SVG/",
                "jax/output/HTML-CSS/", "fonts/HTML-CSS/TeX/woff/", "localization/en/")
MATHJAX_REQUIRED = ("MathJax.js", "config/Safe.js", "config/TeX-AMS-MML_HTMLorMML.js", "extensions/Safe.js",
                    "jax/output/SVG/fonts/TeX/fontdata.js", "jax/output/SVG/jax.js",
                    "jax/output/SVG/fonts/TeX/Size1/Regular/Main.js", "jax/output/SVG/config.js")


# --------------------------------------------------------------------------- offline static files

def static_dir() -> Path:
    """visdom's ``static/`` folder (where its server looks for JS, CSS and fonts)."""
    import importlib.util
    return Path(importlib.util.find_spec("visdom").origin).parent / "static"


def _required(static: Path) -> list[Path]:
    return ([static / dest for _, _, dest in STATIC_FILES]
            + [static / MATHJAX_DEST / p for p in MATHJAX_REQUIRED] + [static / "version.built"])


def static_missing(static: Path | None = None) -> list[Path]:
    """The static files visdom's page needs that are not there yet (empty: ready offline)."""
    return [p for p in _required(static or static_dir()) if not p.is_file()]


def _mathjax_wanted(path: str) -> bool:
    if not path.startswith(MATHJAX_KEEP):
        return False
    parts = path.split("/")  # jax/output/<SVG|HTML-CSS>/fonts/<font set>/...: only the TeX set
    return not (len(parts) > 5 and parts[:2] == ["jax", "output"] and parts[3] == "fonts" and parts[4] != "TeX")


def npm_timeout() -> float:
    """Seconds ``npm pack`` may take in all (``MMCOURSE_NPM_TIMEOUT``, default 600)."""
    return float(os.environ.get("MMCOURSE_NPM_TIMEOUT", "") or 600)


def _npm_pack(specs: Iterable[str], into: Path) -> dict[str, Path]:
    """``npm pack`` the specs into ``into``; returns {spec: tarball}. Bounded by :func:`npm_timeout`."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("install_static needs npm (Node.js) to fetch visdom's JavaScript from the "
                           "npm registry; install Node.js (https://nodejs.org) and retry")
    specs = sorted(set(specs))
    cmd = [npm, "pack", "--json", "--fetch-timeout", "60000", "--fetch-retries", "2",
           "--pack-destination", str(into), *specs]
    limit = npm_timeout()
    try:
        proc = subprocess.run(cmd, cwd=into, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            f"npm pack did not finish within {limit:.0f} s and was stopped:\n    {shlex.join(cmd)}\n"
            "  Is the npm registry reachable (a proxy: npm config set proxy ...; a mirror: npm config "
            "set registry URL)? Retry on a better connection or raise the limit with "
            "MMCOURSE_NPM_TIMEOUT=1800. Without these files the dashboard falls back to inline plots.") from None
    if proc.returncode != 0:
        raise RuntimeError(f"npm pack failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    tarballs = [into / entry["filename"] for entry in json.loads(proc.stdout)]
    return dict(zip(specs, tarballs))


def _copy_member(tar: tarfile.TarFile, member: str, dest: Path) -> None:
    src = tar.extractfile(f"package/{member}")
    if src is None:
        raise RuntimeError(f"{member} is not a file in {tar.name}")
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        shutil.copyfileobj(src, f)


def _install_mathjax(tarball: Path, static: Path) -> None:
    with tarfile.open(tarball) as tar:
        for m in tar.getmembers():
            path = m.name.removeprefix("package/")
            if m.isfile() and _mathjax_wanted(path):
                _copy_member(tar, path, static / MATHJAX_DEST / path)


def install_static(static: Path | None = None) -> Path:
    """Put visdom's JS/CSS/fonts into its ``static/`` folder from the npm registry; returns the folder.

    Idempotent: returns at once when every file is there. See the module docstring for the
    packages and versions (those of visdom's ``server/build.py``). Needs ``npm``.
    """
    static = static or static_dir()
    if not static_missing(static):
        return static
    with tempfile.TemporaryDirectory(prefix="mmcourse-visdom-") as tmp:
        tarballs = _npm_pack([spec for spec, _, _ in STATIC_FILES] + [MATHJAX], Path(tmp))
        for spec, member, dest in STATIC_FILES:
            with tarfile.open(tarballs[spec]) as tar:
                _copy_member(tar, member, static / dest)
        _install_mathjax(tarballs[MATHJAX], static)
    version = (static.parent / "VERSION").read_text().strip()
    (static / "version.built").write_text(version)  # last: build.py then skips its download
    if missing := static_missing(static):
        raise RuntimeError(f"install_static: still missing {[str(p) for p in missing]}")
    return static


# --------------------------------------------------------------------------- the server

def _url(server: str, port: int) -> str:
    return f"{server.rstrip('/')}:{port}"


def reachable(server: str = "http://127.0.0.1", port: int = DEFAULT_PORT, timeout: float = 1.0) -> bool:
    """Does a visdom server answer at ``server:port``? Gives up after ``timeout`` seconds in all.

    A plain HTTP/1.0 GET on a socket (no proxy, no redirect): a server that accepts but never
    answers, or answers slowly, cannot make it hang.
    """
    host = urllib.parse.urlsplit(server if "//" in server else f"http://{server}").hostname or "127.0.0.1"
    deadline = time.monotonic() + timeout
    data = b""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(f"GET / HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
            while len(data) < 1 << 16 and (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                chunk = sock.recv(1 << 14)
                if not chunk:
                    break
                data += chunk
    except OSError:  # refused, unknown host, timed out (socket.timeout is an OSError)
        pass
    status = data.split(b"\r\n", 1)[0].split()
    return len(status) > 1 and status[1] == b"200" and b"visdom" in data


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_command(port: int, env_path: Path) -> list[str]:
    # run_server.main parses sys.argv and downloads nothing (python -m visdom.server does);
    # sys.modules["torch"] = None: visdom imports torch if it can, the server never needs it (-10 s)
    code = "import sys; sys.modules['torch'] = None; from visdom.server.run_server import main; main()"
    return [sys.executable, "-c", code,
            "-port", str(port), "-env_path", str(env_path), "-bind_local", "-logging_level", "WARNING"]


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop a server started by :func:`serve` (its whole process group) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


def serve(port: int = DEFAULT_PORT, env_path: str | None = None, block: bool = True,
          timeout: float = 30.0) -> subprocess.Popen | None:
    """Start visdom on 127.0.0.1:``port`` offline (``make dashboard``; notebook 07, "Watching training").

    Installs the static files if missing (:func:`install_static`), starts the server in its own
    process group (``env_path`` default ``<cache>/visdom``, log in ``server.log`` there), waits
    until it answers and prints the URL. ``block=True`` waits until Ctrl-C and returns None;
    ``block=False`` returns the ``Popen`` (stop it with :func:`stop`). None also when a visdom
    already answers on that port.
    """
    url = _url("http://127.0.0.1", port)
    if reachable(port=port):
        print(f"visdom is already running: {url}")
        return None
    install_static()
    env = Path(env_path) if env_path else config.cache_dir() / "visdom"
    env.mkdir(parents=True, exist_ok=True)
    with open(env / "server.log", "ab") as log:
        proc = subprocess.Popen(_server_command(port, env), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    _wait_until_up(proc, port, env / "server.log", timeout)
    print(f"visdom dashboard: {url}  (env {env}; Ctrl-C stops it)" if block else f"visdom dashboard: {url}")
    if not block:
        return proc
    _wait_until_stopped(proc)
    return None


def _wait_until_stopped(proc: subprocess.Popen) -> None:
    """Wait for the server; Ctrl-C or SIGTERM (e.g. make killed) stop its process group too."""
    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, interrupt) if main else None
    try:
        proc.wait()
    except KeyboardInterrupt:
        print("stopping visdom")
    finally:
        stop(proc)
        if main:
            signal.signal(signal.SIGTERM, previous)


def _wait_until_up(proc: subprocess.Popen, port: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not reachable(port=port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
            raise RuntimeError(f"visdom did not start on 127.0.0.1:{port} (exit {proc.returncode}):\n{tail}")
        time.sleep(0.2)


# --------------------------------------------------------------------------- curves and figures

@dataclass
class Curves:
    """What the dashboard has seen: train loss and lr per step, each eval metric per eval step."""

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    evals: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)

    def add_step(self, info: dict[str, Any]) -> None:
        self.steps.append(int(info["step"]))
        self.loss.append(float(info["loss"]))
        self.lr.append(float(info.get("lr", float("nan"))))

    def add_eval(self, info: dict[str, Any]) -> dict[str, float]:
        metrics = eval_metrics(info)
        for name, value in metrics.items():
            xs, ys = self.evals.setdefault(name, ([], []))
            xs.append(int(info["step"]))
            ys.append(value)
        return metrics


def eval_metrics(info: dict[str, Any]) -> dict[str, float]:
    """The metrics of an "eval" event (numbers that are not bookkeeping like step or improved)."""
    return {k: float(v) for k, v in info.items()
            if k not in META_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)}


def draw(curves: Curves, title: str = "training", fig: Any = None) -> Any:
    """A matplotlib Figure: loss (train, and eval losses), learning rate, other eval metrics."""
    from matplotlib.figure import Figure
    fig = fig if fig is not None else Figure(figsize=(11, 3.2), layout="constrained")
    fig.clear()
    others = {k: v for k, v in curves.evals.items() if "loss" not in k}
    axes = fig.subplots(1, 3 if others else 2, squeeze=False)[0]
    ax = axes[0]
    ax.plot(curves.steps, curves.loss, label="train loss", lw=1)
    for name, (xs, ys) in curves.evals.items():
        if "loss" in name:
            ax.plot(xs, ys, "o-", label=name)
    ax.set(title="loss", xlabel="optimizer step", ylabel="loss")
    ax.legend(loc="upper right", fontsize="small")
    axes[1].plot(curves.steps, curves.lr, color="tab:green")
    axes[1].set(title="learning rate (parameter group 0)", xlabel="optimizer step", ylabel="lr")
    axes[1].ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    if others:
        for name, (xs, ys) in others.items():
            axes[2].plot(xs, ys, "o-", label=name)
        axes[2].set(title="eval metrics", xlabel="optimizer step", ylabel="metric")
        axes[2].legend(loc="lower right", fontsize="small")
    fig.suptitle(title)
    return fig


def in_kernel() -> bool:
    """Running in a Jupyter (IPython) kernel, e.g. a notebook or papermill?"""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and hasattr(shell, "kernel")


def _png(fig: Any) -> Any:
    from IPython.display import Image
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return Image(data=buf.getvalue(), format="png")


def _display(fig: Any, handle: Any = None) -> Any:
    """Show ``fig`` in the notebook, in place of the previous image when ``handle`` is given."""
    from IPython.display import display
    if handle is None:
        return display(_png(fig), display_id=True)
    handle.update(_png(fig))
    return handle


# --------------------------------------------------------------------------- visdom client

def _client(server: str, port: int, env: str) -> Any:
    """A ``visdom.Visdom`` for loopback: no proxies from the environment, 5 s timeouts, quiet."""
    import requests
    import visdom

    class Client(visdom.Visdom):
        @property
        def session(self) -> requests.Session:
            if self._session is None:
                self._session = requests.Session()
                self._session.trust_env = False
            return self._session

        def _handle_post(self, url: str, data: Any = None) -> str:
            return self.session.post(url, data=data or {}, timeout=5).text

    log = logging.getLogger("visdom")
    level = log.level
    log.setLevel(logging.ERROR)  # "Without the incoming socket ..." is expected here
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # visdom's logger.warn
            return Client(server=server, port=port, env=env, use_incoming_socket=False, raise_exceptions=True)
    finally:
        log.setLevel(level)


class _VisdomSink:
    """Appends buffered points to one visdom line window per curve (window ids ``<title>-<curve>``)."""

    def __init__(self, viz: Any, title: str, env: str):
        self.viz, self.title, self.env = viz, title, env
        self.created: set[str] = set()

    def win(self, curve: str) -> str:
        return f"{self.title}-{curve}".replace(" ", "_")

    def line(self, curve: str, xs: list[int], ys: list[float], ylabel: str) -> None:
        if not xs:
            return
        win = self.win(curve)
        # plotly renders titles and labels as (a subset of) HTML and decodes entities: escape them
        opts = {"title": html.escape(f"{self.title}: {curve}"), "xlabel": "optimizer step",
                "ylabel": html.escape(ylabel)}
        update = "append" if win in self.created else None  # first send replaces an old window
        self.viz.line(X=list(xs), Y=list(ys), win=win, env=self.env, update=update, opts=opts)
        self.created.add(win)


# --------------------------------------------------------------------------- the callback

class Live:
    """The ``fit(callback=...)`` object :func:`live` returns; ``backend``, ``curves``, ``figure``, ``url``."""

    def __init__(self, title: str, env: str, server: str, port: int, every: int):
        self.title, self.env, self.every = title, env, max(1, int(every))
        self.curves = Curves()
        self.figure: Any = None
        self.url: str | None = None
        self._handle: Any = None
        self._sink: _VisdomSink | None = None
        self._sent = 0  # train points already sent to visdom
        self.backend = self._pick(server, port)

    def _pick(self, server: str, port: int) -> str:
        if reachable(server, port):
            try:
                self._sink = _VisdomSink(_client(server, port, self.env), self.title, self.env)
                self.url = f"{_url(server, port)}/env/{self.env}"
                print(f"live curves in visdom: {self.url}")
                return "visdom"
            except Exception as err:  # noqa: BLE001  (a server that answers but misbehaves)
                print(f"visdom at {_url(server, port)} did not work ({err}); drawing here instead")
        return "inline" if in_kernel() else "log"

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        handler = {"step": self._step, "eval": self._eval, "end": self._end}.get(event)
        if handler is not None:
            handler(info)

    def _step(self, info: dict[str, Any]) -> None:
        self.curves.add_step(info)
        if len(self.curves.steps) % self.every:
            return
        if self.backend == "visdom":
            self._flush()
        elif self.backend == "inline":
            self._redraw()
        else:
            total = f"/{info['total_steps']}" if "total_steps" in info else ""
            print(f"[{self.title}] step {info['step']}{total} epoch {info.get('epoch', 0)} "
                  f"loss {float(info['loss']):.4f} lr {float(info.get('lr', 0.0)):.2e}", flush=True)

    def _eval(self, info: dict[str, Any]) -> None:
        metrics = self.curves.add_eval(info)
        if self.backend == "visdom":
            self._flush()
            step = int(info["step"])
            self._send(lambda: [self._sink.line(f"eval {k}", [step], [v], k) for k, v in metrics.items()])
        elif self.backend == "inline":
            self._redraw()
        else:
            text = " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            print(f"[{self.title}] eval at step {info['step']}: {text}{' (best)' if info.get('improved') else ''}",
                  flush=True)

    def _end(self, info: dict[str, Any]) -> None:
        if self.backend == "visdom":
            self._flush()
            self._send(lambda: self._sink.viz.save([self.env]))
        self.figure = draw(self.curves, self.title, self.figure)
        if in_kernel():
            self._handle = _display(self.figure, self._handle)
        best = info.get("best_metric")
        print(f"[{self.title}] done: {info.get('step')} steps"
              + (f", best {best:.4f} at step {info.get('best_step')}" if best is not None else "")
              + (f"; curves at {self.url}" if self.url else ""), flush=True)

    def _redraw(self) -> None:
        self.figure = draw(self.curves, self.title, self.figure)
        self._handle = _display(self.figure, self._handle)

    def _flush(self) -> None:
        """Send the train points not sent yet (loss and lr windows)."""
        c, start = self.curves, self._sent
        if start == len(c.steps):
            return

        def send() -> None:
            self._sink.line("loss", c.steps[start:], c.loss[start:], "loss")
            self._sink.line("lr", c.steps[start:], c.lr[start:], "lr (parameter group 0)")
        if self._send(send):
            self._sent = len(c.steps)

    def _send(self, fn: Callable[[], Any]) -> bool:
        """Run a visdom call; if the server has gone away, fall back to drawing here (training goes on)."""
        if self.backend != "visdom":
            return False
        try:
            fn()
            return True
        except Exception as err:  # noqa: BLE001
            self.backend = "inline" if in_kernel() else "log"
            print(f"[{self.title}] lost the visdom server ({err}); continuing with backend {self.backend!r}")
            return False


def live(title: str = "training", *, env: str = "mmcourse", server: str = "http://127.0.0.1",
         port: int = DEFAULT_PORT, every: int = 10) -> Callable[[str, dict], None]:
    """A ``fit(..., callback=live())`` that plots train loss, lr and eval metrics live (notebook 07).

    visdom when a server answers on ``server:port``, else an inline figure in a Jupyter kernel,
    else log lines (see the module docstring); ``cb.backend`` says which. ``every``: redraw (or
    log) every that many optimizer steps; evals and the end always redraw. ``cb.figure`` holds
    the final matplotlib figure after the "end" event.
    """
    return Live(title, env, server, port, every)


# --------------------------------------------------------------------------- samples

def _as_image(x: Any) -> Any:
    """HxWxC (or HxW) numpy array in [0, 1] or uint8 from a PIL image, array or CHW tensor."""
    import numpy as np
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy()
    arr = np.asarray(x)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    return arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr


def _split(items: Iterable[Any]) -> list[tuple[str, Any]]:
    """``(caption, text-or-image)`` pairs from strings, images or ``(caption, thing)`` tuples."""
    out = []
    for i, item in enumerate(items):
        pair = isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
        caption, thing = item if pair else (f"#{i}", item)
        out.append((caption, thing if isinstance(thing, str) else _as_image(thing)))
    return out


def show_samples(items: Iterable[Any], title: str = "samples", *, env: str = "mmcourse",
                 server: str = "http://127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """Show text and image samples (e.g. model outputs) where :func:`live` would draw (notebook 07).

    visdom: a text window ``<title>-text`` and one image window per image; else the texts are
    printed and the images drawn as one figure (shown when in a Jupyter kernel).

    ``items``: strings, images (PIL, HxWxC array, CxHxW tensor) or ``(caption, item)`` pairs.
    """
    samples = _split(items)
    if reachable(server, port):
        viz = _client(server, port, env)
        # a text window is raw HTML (innerHTML): model output must be escaped, or "<script>" runs
        texts = "".join(f"<li><b>{html.escape(c)}</b>: {html.escape(t)}</li>"
                        for c, t in samples if isinstance(t, str))
        if texts:
            viz.text(f"<ol>{texts}</ol>", win=f"{title}-text", env=env, opts={"title": title})
        for i, (caption, img) in enumerate(s for s in samples if not isinstance(s[1], str)):
            chw = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
            viz.image(chw, win=f"{title}-img{i}", env=env, opts={"title": caption, "caption": caption})
        return
    for caption, t in samples:
        if isinstance(t, str):
            print(f"[{title}] {caption}: {t}")
    images = [(c, im) for c, im in samples if not isinstance(im, str)]
    if images:
        fig = _image_grid(images, title)
        if in_kernel():
            _display(fig)


def _image_grid(images: list[tuple[str, Any]], title: str) -> Any:
    from matplotlib.figure import Figure
    fig = Figure(figsize=(2.2 * min(len(images), 6), 2.4 * ((len(images) + 5) // 6)), layout="constrained")
    axes = fig.subplots((len(images) + 5) // 6, min(len(images), 6), squeeze=False).ravel()
    for ax, (caption, img) in zip(axes, images):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        ax.set_title(caption, fontsize="small")
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title)
    return fig


def main(port: int = DEFAULT_PORT) -> int:
    """``python -m mmcourse dashboard``: :func:`serve` until Ctrl-C."""
    serve(port=port, block=True)
    return 0
