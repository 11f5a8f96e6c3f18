"""The notebook runner behind ``mmcourse run`` and ``make course`` (notebook 00_welcome,
"Build report").

:func:`run` executes notebooks with papermill, each in a separate, killable process, and
writes ``build/``: executed notebooks, their HTML and logs, ``report.json`` and ``index.html``
(:mod:`mmcourse.report`). The caller chooses everything explicitly: the profile (the kernel
gets ``MMCOURSE_PROFILE`` and the ``PROFILE`` parameter) and whether checks are strict
(``MMCOURSE_STRICT_CHECKS``). The runner measures each kernel's peak memory itself.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mmcourse import nbio
from mmcourse.checks import STRICT_ENV
from mmcourse.config import PROFILE_ENV, PROFILES
from mmcourse.fileio import write_text_atomic
from mmcourse.report import RECORD_ENV, read_record, summary_table, write_build_report


# papermill makes nbclient raise when a cell's output messages arrive more than iopub_timeout seconds
# after its reply (nbclient's default: 4 s). A loaded machine can take longer, and a graded notebook
# was once stopped that way in the middle of a correct cell: wait longer before calling it stuck.
IOPUB = {"iopub_timeout": 30}


def _papermill_child(config_json: str) -> int:
    """Subprocess entry point: run papermill in-process, write a result file, exit.

    The kernel is this process's child, so after papermill shuts it down (and reaps it) its peak
    memory is in ``RUSAGE_CHILDREN``: this is how ``build/report.json`` gets each notebook's
    peak memory, measured from outside the kernel (nothing runs inside it for that).

    The launcher blocks ``rfc3987_syntax`` before importing anything: jsonschema imports it (if
    installed) only to check "iri" formats, which nbformat's schema never uses, and building its
    grammar costs ~4 s per process.
    """
    import logging
    import resource

    import papermill
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    cfg = json.loads(config_json)
    if cfg.get("loopback_up"):
        _loopback_up()  # a fresh network namespace (mmcourse grade) starts with `lo` down
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    result: dict[str, Any] = {"status": "ok", "error": None}
    try:
        language = KernelSpecManager().get_kernel_spec(cfg["kernel_name"]).language
        papermill.execute_notebook(
            cfg["input"], cfg["output"], parameters={"PROFILE": cfg["profile"]},
            kernel_name=cfg["kernel_name"], language=language, cwd=cfg["cwd"], progress_bar=False,
            log_output=True, execution_timeout=cfg["cell_timeout"], start_timeout=120,
            **(IOPUB | cfg.get("engine_kwargs", {})))
    except PapermillExecutionError as exc:
        result = {"status": "failed", "error": f"{exc.ename}: {exc.evalue}"}
    except CellTimeoutError as exc:
        result = {"status": "timeout", "error": f"CellTimeoutError: {exc}"}
    except DeadKernelError as exc:
        result = {"status": "failed", "error": f"DeadKernelError: {exc}"}
    except Exception as exc:  # noqa: BLE001 - everything else is a failed run, reported
        result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result["children_peak_rss_mb"] = round(peak / (2**20 if sys.platform == "darwin" else 1024), 1)
    write_text_atomic(cfg["result"], json.dumps(result))
    return 0


def _loopback_up() -> None:
    """Bring the loopback interface up (SIOCGIFFLAGS / SIOCSIFFLAGS), so that papermill can talk
    to its kernel over 127.0.0.1 inside a new network namespace that has no other interface."""
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH", b"lo", 0)))[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 0x1))  # IFF_UP


def _descendants(pid: int) -> list[int]:
    """PIDs of all descendants of ``pid`` (psutil if available, else ``ps``)."""
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - process already gone
        return []
    try:
        out = subprocess.run(["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True,
                             check=False).stdout
    except OSError:
        return []
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2:
            children.setdefault(int(parts[1]), []).append(int(parts[0]))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _peak_rss_of(pids: list[int]) -> float | None:
    """Largest peak RSS (Linux ``VmHWM``) among live ``pids``, in MiB; None elsewhere."""
    peaks = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peaks.append(int(line.split()[1]) / 1024)
        except (OSError, ValueError, IndexError):
            pass
    return round(max(peaks), 1) if peaks else None


def _kill_tree(proc: subprocess.Popen) -> float | None:
    """SIGKILL ``proc``, its process group, and the process group of every descendant.

    jupyter_client starts each kernel in a new session, so killing the wrapper's group alone
    would leave the kernel (and its workers) running. Returns the tree's peak RSS (MiB) seen
    just before the kill, where the platform tells.
    """
    pids = [proc.pid] + _descendants(proc.pid)
    peak = _peak_rss_of(pids)
    own = os.getpgrp()
    groups = set()
    for pid in pids:
        try:
            groups.add(os.getpgid(pid))
        except OSError:
            pass
    for group in groups - {own}:
        try:
            os.killpg(group, signal.SIGKILL)
        except OSError:
            pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    proc.wait()
    return peak


# papermill's cell boundaries and ipykernel's TCP notice go to the log file only.
_QUIET = re.compile(r"^(Executing|Ending) Cell \d+-+$|Kernel is running over TCP without encryption")


def _pump(stream, log_path: Path, prefix: str, echo: bool = True) -> None:
    with open(log_path, "w", encoding="utf-8") as log:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            log.write(line + "\n")
            log.flush()
            if not echo or _QUIET.search(line):
                continue
            text = f"{prefix}{line}"
            try:  # never let printing stop the draining of the pipe
                try:
                    print(text, flush=True)
                except UnicodeEncodeError:
                    enc = getattr(sys.stdout, "encoding", None) or "ascii"
                    print(text.encode(enc, "replace").decode(enc), flush=True)
            except Exception:  # noqa: BLE001 - e.g. a closed stdout
                pass


def _running_cell(executed: Path) -> int | None:
    try:
        nb = nbio.read(executed)
    except Exception:  # noqa: BLE001 - a half-written notebook
        return None
    # count source cells only: papermill inserts an "injected-parameters" cell
    cells = [c for c in nb.cells if "injected-parameters" not in nbio.tags(c)]
    for index, cell in enumerate(cells):
        if cell.get("metadata", {}).get("papermill", {}).get("status") == "running":
            return index
    return None


def _short_error(text: str | None, max_lines: int = 6, max_chars: int = 1500) -> str | None:
    if not text:
        return text
    text = re.sub(r"\x1b\[[0-9;]*m", "", text).strip()
    text = "\n".join(text.splitlines()[-max_lines:])
    return text[-max_chars:]


def _run_one(path: Path, build: Path, profile: str, timeout: int, kernel_name: str,
             strict_checks: bool) -> dict[str, Any]:
    name = path.stem
    record = build / f"{name}.record.jsonl"
    executed = build / f"{name}.ipynb"
    for stale in (record, executed, build / f"{name}.html"):
        stale.unlink(missing_ok=True)
    fd, result_file = tempfile.mkstemp(prefix=f".{name}.", suffix=".result.json", dir=build)
    os.close(fd)
    os.unlink(result_file)

    env = dict(os.environ)
    env.update({PROFILE_ENV: profile, RECORD_ENV: str(record.resolve()),
                "PYTHONUNBUFFERED": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
                "JUPYTER_PLATFORM_DIRS": "1"})
    if strict_checks:
        env[STRICT_ENV] = "1"
    else:
        env.pop(STRICT_ENV, None)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(
        os.pathsep) if p])
    config = {"input": str(path.resolve()), "output": str(executed.resolve()),
              "profile": profile, "kernel_name": kernel_name, "cwd": str(path.parent.resolve()),
              "cell_timeout": int(timeout), "result": result_file}
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    result, timed_out, killed_peak, seconds, returncode = execute(
        config, env, timeout, build / f"{name}.log", f"[{name}] ")
    if timed_out:
        cell = _running_cell(executed) if executed.exists() else None
        where = f" in cell {cell}" if cell is not None else ""
        status, error = "timeout", (f"TimeoutError: killed after {timeout} s{where} "
                                    "(notebook process group and kernel)")
    elif result:
        status, error = result["status"], _short_error(result.get("error"))
    else:
        status, error = "failed", f"runner exited with code {returncode} and no result " \
                                  f"(see {build / (name + '.log')})"

    rec = read_record(record)
    # the kernel's peak: RUSAGE_CHILDREN of the papermill process, or VmHWM seen before a kill
    peaks = [p for p in (result.get("children_peak_rss_mb"), killed_peak) if p]
    if executed.exists():
        try:
            _write_html(executed, build / f"{name}.html")
        except Exception as exc:  # noqa: BLE001 - a half-written notebook after a kill
            print(f"[{name}] could not render HTML: {type(exc).__name__}: {exc}", flush=True)
    return {"notebook": name, "status": status, "seconds": seconds,
            "peak_rss_mb": max(peaks) if peaks else None, "profile": profile,
            "data_sources": rec.get("data_sources", {}), "metrics": rec.get("metrics", {}),
            "claims": rec.get("claims", []), "error": error, "started": started}


def execute(config: dict[str, Any], env: dict[str, str], timeout: float, log_path: Path,
            prefix: str, wrapper: list[str] | None = None, preexec_fn=None,
            echo: bool = True) -> tuple[dict[str, Any], bool, float | None, float, int | None]:
    """Run :func:`_papermill_child` with ``config`` in a new session and wait up to ``timeout`` s.

    On timeout (or Ctrl-C) the child, its kernel and their process groups are killed. Output
    goes to ``log_path`` (and, with ``echo``, to stdout prefixed with ``prefix``). ``wrapper``
    is put before the command (``mmcourse grade``: ``unshare -n``); ``preexec_fn`` runs in the
    child before it starts (resource limits). Returns (the child's result, timed out, peak RSS
    before a kill, seconds, exit code).
    """
    result_file = config["result"]
    code = ("import sys; sys.modules.setdefault('rfc3987_syntax', None); "
            "from mmcourse.runner import _papermill_child; "
            "sys.exit(_papermill_child(sys.argv[1]))")
    t0 = time.monotonic()
    proc = subprocess.Popen([*(wrapper or []), sys.executable, "-c", code, json.dumps(config)],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=preexec_fn)
    reader = threading.Thread(target=_pump, args=(proc.stdout, log_path, prefix, echo), daemon=True)
    reader.start()
    timed_out, killed_peak = False, None
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        killed_peak = _kill_tree(proc)
    except BaseException:  # Ctrl-C: the runner is in its own session, so take it down too
        _kill_tree(proc)
        raise
    seconds = round(time.monotonic() - t0, 2)
    reader.join(timeout=10)
    result: dict[str, Any] = {}
    if os.path.exists(result_file):
        with open(result_file, encoding="utf-8") as f:
            result = json.load(f)
        os.unlink(result_file)
    return result, timed_out, killed_peak, seconds, proc.returncode


def _write_html(executed: Path, out: Path) -> None:
    from mmcourse.book import notebook_html  # offline: a local MathJax, no CDN scripts

    notebook_html(nbio.read(executed), out)


@contextlib.contextmanager
def _sigterm_as_exit():
    """Turn SIGTERM (``kill``, a CI job being cancelled) into ``SystemExit`` while notebooks run,
    so the runner takes the notebook's kernel down with it as it does on Ctrl-C. The kernel lives
    in its own session and would otherwise outlive a terminated runner."""
    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, _exit)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(names: list[str] | None = None, src_dir: str | os.PathLike = "solutions",
        build_dir: str | os.PathLike = "build", profile: str = "smoke", timeout: int = 900,
        kernel_name: str = "python3", *, strict_checks: bool) -> list[dict]:
    """Execute notebooks with papermill, each in its own killable subprocess; return report rows.

    Writes ``build/<name>.ipynb``, ``.html``, ``.log``, ``.record.jsonl``, ``build/index.html``
    and ``build/report.json`` (merged with rows of notebooks not run this time). ``profile`` is
    used as given, whatever ``MMCOURSE_PROFILE`` says: it becomes the kernel's
    ``MMCOURSE_PROFILE`` and the notebook's ``PROFILE`` parameter. ``strict_checks=True``
    (instructor sources, CI) runs the kernels with ``MMCOURSE_STRICT_CHECKS=1``, so a failed or
    pending check raises; ``False`` (student copies) removes it from their environment.
    ``timeout`` is the wall-clock limit per notebook (also used as papermill's per-cell limit).
    Prints the output of each notebook prefixed with its name, then :func:`summary_table`.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    src, build = Path(src_dir), Path(build_dir)
    paths = nbio.select(src, names)
    build.mkdir(parents=True, exist_ok=True)
    checks = "strict" if strict_checks else "lenient"
    rows = []
    with _sigterm_as_exit():
        for path in paths:
            print(f"[{path.stem}] running {path} (profile {profile}, {checks} checks, "
                  f"timeout {timeout} s)", flush=True)
            row = _run_one(path, build, profile, timeout, kernel_name, strict_checks)
            print(f"[{path.stem}] {row['status']} in {row['seconds']:.1f} s", flush=True)
            rows.append(row)
    write_build_report(build, rows)
    print(summary_table(rows), flush=True)
    return rows
