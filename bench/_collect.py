"""Gather the JSON records of one ``make bench`` run into ``build/bench.json`` and print every ratio
side by side (the last step of ``make bench``).

    python bench/_collect.py DIR OUT SECONDS
"""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def collect(directory: Path, seconds: float) -> dict:
    """``{"benchmarks": {script: record}, "ratios": {"script: ratio": value}, ...}`` of DIR/*.json."""
    from mmcourse import results

    records = {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}
    ratios = {f"{name}: {k}": v for name, rec in records.items() for k, v in rec.get("ratios", {}).items()
              if v is not None}
    return {"recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": results._commit(),
            "hardware": results.hardware(), "seconds": seconds, "benchmarks": records, "ratios": ratios}


def main(argv: list[str]) -> int:
    from mmcourse import fileio

    directory, out, seconds = Path(argv[0]), Path(argv[1]), float(argv[2])
    record = collect(directory, seconds)
    fileio.write_text_atomic(out, json.dumps(record, indent=2) + "\n")
    print(f"\n== every ratio of this run ({len(record['benchmarks'])} benchmarks, {seconds / 60:.1f} min in all)")
    width = max((len(k) for k in record["ratios"]), default=10)
    for name, value in record["ratios"].items():
        print(f"{name:<{width}} {value:>8.3f}x")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
