"""Data-loading throughput, cold vs. warm on-disk cache (``make bench``; notebook 00, "Speed").

Measures samples/s for Flickr8k images (JPEG decode + resize to 224, notebooks 04/08) and FSDD
log-mel spectrograms (FLAC/WAV decode + log-mel, notebooks 03/10): a cold pass with an empty
cache (decode, compute, write the cache), then a warm pass that reads the cache, optionally
through a DataLoader with workers. Uses a fresh temporary cache folder unless --cache-dir is
given, so "cold" is really cold. Needs the real data (MMCOURSE_DATA_DIR); on the synthetic
stand-ins there is nothing to cache and the script says so.

    python bench/data_throughput.py [--n 1000] [--workers 0] [--image-size 224] [--quick] [--json PATH]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time


def throughput(ds, n: int, workers: int, batch_size: int = 32) -> float:
    """Samples per second reading the first ``n`` samples of ``ds``."""
    from torch.utils.data import Subset

    from mmcourse import data

    sub = Subset(ds, range(min(n, len(ds))))
    start = time.perf_counter()
    if workers:
        for _ in data.dataloader(sub, batch_size=batch_size, num_workers=workers, pin_memory=False,
                                 persistent_workers=False):
            pass
    else:
        for i in range(len(sub)):
            sub[i]
    return len(sub) / (time.perf_counter() - start)


def bench(name: str, make, n: int, workers: int) -> dict:
    ds = make()
    cold = throughput(ds, n, workers)
    warm = throughput(ds, n, workers)
    return {"name": name, "source": ds.info.source, "n": min(n, len(ds)), "cold": cold, "warm": warm}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="samples per pass (default 1000)")
    p.add_argument("--quick", action="store_true", help="100 samples per pass: a smoke test")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0: main process)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--cache-dir", help="cache folder to use (default: a fresh temporary one)")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.quick:
        args.n = min(args.n, 100)
    with tempfile.TemporaryDirectory(prefix="mmcourse-bench-") as tmp:
        os.environ["MMCOURSE_CACHE_DIR"] = args.cache_dir or tmp
        os.environ.setdefault("MMCOURSE_DATA_CACHE", "1")
        from mmcourse import data

        rows = [
            bench("flickr8k images", lambda: data.load("flickr8k", "train", image_size=args.image_size),
                  args.n, args.workers),
            bench("fsdd log-mels", lambda: data.load("fsdd", "train", features="logmel"), args.n, args.workers),
        ]
    print(f"\ndata throughput (samples/s), workers={args.workers}, cache in {args.cache_dir or 'a fresh temp dir'}")
    print(f"{'dataset':<18} {'source':<10} {'n':>6} {'cold':>10} {'warm':>10} {'speed-up':>9}")
    for r in rows:
        print(f"{r['name']:<18} {r['source']:<10} {r['n']:>6} {r['cold']:>10.1f} {r['warm']:>10.1f} "
              f"{r['warm'] / r['cold']:>8.1f}x")
    if any(r["source"] != "real" for r in rows):
        print("note: synthetic stand-ins are generated on the fly and not cached; set MMCOURSE_DATA_DIR "
              "to the real data for meaningful numbers")
    if args.json:
        import json

        from mmcourse import fileio, results

        record = {"hardware": results.hardware(), "workers": args.workers, "image_size": args.image_size,
                  "rows": {r["name"]: r for r in rows},
                  "ratios": {f"{r['name']} warm vs. cold": r["warm"] / r["cold"] for r in rows}}
        fileio.write_text_atomic(args.json, json.dumps(record, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
