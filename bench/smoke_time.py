"""The course's smoke time, per notebook and in total, against the committed previous record
(``make bench``; COURSE_DESIGN §6: ``smoke`` stays within 90 s per notebook on a 2-core CPU).

Reads the smoke-profile rows of ``build/report.json`` (written by ``make course`` or
``python -m mmcourse run``) and prints, per notebook, this run's seconds beside those of the
committed record ``bench/smoke_times.json``, their ratio, and whether the notebook is over the
budget; then the totals. ``--update`` makes this run the new record: commit the file with the
change that made the course faster or slower. Nothing is timed here: it reads what the runner
measured (wall time of each notebook's own process, kernel start included).

    python bench/smoke_time.py [--report build/report.json] [--record PATH] [--json PATH] [--update]
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECORD = REPO / "bench" / "smoke_times.json"
BUDGET_S = 90.0


def this_run(report: Path) -> dict[str, float]:
    """Seconds of each notebook that ran ``ok`` in the smoke profile, from a runner's report.json."""
    rows = json.loads(report.read_text())["notebooks"]
    return {r["notebook"]: float(r["seconds"]) for r in rows if r.get("profile") == "smoke" and r.get("status") == "ok"}


def compare(now: dict[str, float], before: dict[str, float]) -> dict:
    """Per notebook and in total: now, before, now / before, over budget. Totals over the notebooks in both."""
    rows = {}
    for name in sorted(set(now) | set(before)):
        a, b = now.get(name), before.get(name)
        rows[name] = {"seconds": a, "previous": b, "ratio": a / b if a and b else None,
                      "over_budget": a is not None and a > BUDGET_S}
    common = [n for n in rows if rows[n]["seconds"] and rows[n]["previous"]]
    total, prev = sum(now[n] for n in common), sum(before[n] for n in common)
    return {"notebooks": rows, "total_s": round(sum(now.values()), 1), "common": common,
            "total_common_s": round(total, 1), "previous_common_s": round(prev, 1),
            "ratio": total / prev if prev else None}


def table(result: dict) -> str:
    cell = lambda v, spec: format(v, spec) if v is not None else "—"  # noqa: E731
    lines = [f"{'notebook':<28} {'now s':>7} {'record s':>9} {'ratio':>6}  budget"]
    for name, r in result["notebooks"].items():
        flag = "over 90 s" if r["over_budget"] else ("ok" if r["seconds"] is not None else "not run")
        lines.append(f"{name:<28} {cell(r['seconds'], '7.1f')} {cell(r['previous'], '9.1f')} "
                     f"{cell(r['ratio'], '6.2f')}  {flag}")
    lines.append(f"{'total (in both)':<28} {result['total_common_s']:>7.1f} {result['previous_common_s']:>9.1f} "
                 f"{cell(result['ratio'], '6.2f')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report", default=str(REPO / "build" / "report.json"), help="a runner's report.json")
    p.add_argument("--record", default=str(RECORD), help=f"the committed record (default bench/{RECORD.name})")
    p.add_argument("--json", help="also write the comparison to this JSON file")
    p.add_argument("--quick", action="store_true", help="accepted for `make bench BENCH_ARGS=--quick`; nothing to shorten")
    p.add_argument("--update", action="store_true", help=f"write this run as the new record ({RECORD.name})")
    args = p.parse_args(argv)
    report = Path(args.report)
    if not report.is_file():
        print(f"no smoke run to compare: {report} does not exist. Run `make course` (about 15 min on 2 cores) "
              "first, or pass --report with a runner's report.json", file=sys.stderr)
        return 0
    now = this_run(report)
    if not now:
        print(f"{report} holds no successful smoke-profile notebook: nothing to compare", file=sys.stderr)
        return 0
    record_path = Path(args.record)
    previous = json.loads(record_path.read_text()) if record_path.is_file() else {"notebooks": {}}
    result = compare(now, previous["notebooks"])
    print(f"course smoke time from {report} against the record of {previous.get('recorded', '(none yet)')} "
          f"({previous.get('hardware', {}).get('cpu', 'unknown CPU')}, commit {previous.get('commit', '?')})")
    print(table(result))
    over = [n for n, r in result["notebooks"].items() if r["over_budget"]]
    print(f"note: {len(now)} notebooks, {result['total_s']:.0f} s in all; "
          + (f"over the {BUDGET_S:.0f}-s smoke budget: {', '.join(over)}" if over else
             f"every notebook within the {BUDGET_S:.0f}-s smoke budget"))
    print("note: a ratio above 1 is slower than the record; a machine busy with other work makes every ratio "
          "larger, so compare runs made on an idle machine")
    from mmcourse import fileio, results  # after the table: no torch import on the way to it

    if args.json:
        fileio.write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")
        print(f"results written to {args.json}")
    if args.update:
        record = {"recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "commit": results._commit(), "hardware": results.hardware(), "notebooks": now}
        fileio.write_text_atomic(record_path, json.dumps(record, indent=2) + "\n")
        print(f"record written to {record_path}: commit it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
