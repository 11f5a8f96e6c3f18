"""The full-profile fine-tuning of the course's notebooks as commands (README "Scaling out").

    python -m mmcourse finetune medical --profile full [--out DIR] [--set KEY=VALUE ...]
        [--channels-last] [--compile] [--no-resume]
    torchrun --standalone --nproc_per_node 4 -m mmcourse finetune medical --profile full

One implementation, two entry points: a recipe here calls the same library functions as its
notebook does, with the notebook's settings for the profile (``--set`` changes one of them). It
writes into ``--out`` (default ``build/finetune/<recipe>-<profile>``):

- ``results.json``: the metrics, the settings, the commit, the hardware, the number of processes,
  the wall time and the peak memory (rank 0 writes it, atomically);
- ``checkpoints/<settings hash>/``: ``fit``'s checkpoints, one per epoch. Run the same command
  again and it resumes from the newest (a finished run is loaded, not retrained), also on another
  number of processes: ``batch`` is the global batch, split evenly over the processes.

Under torchrun ``fit`` trains one model across the processes (DDP: NCCL on GPUs, gloo on CPUs);
the small side models (the linear probes) are trained by every process alike, and only rank 0
evaluates, tests and writes. BatchNorm statistics are those of each process's share of the batch.

Recipes: ``recipe`` (notebook 07: five ways to adapt MiniLM, compared on validation), ``captioning``
(notebook 08 (a): MobileNetV2 grid features and a transformer decoder, cross-entropy then
self-critical, beam search chosen on dev) and ``medical`` (notebook 09: the chest X-ray
fine-tuning). Notebook 08's mini-LLaVA (b) and notebook 11 keep their training inside the
notebook for now.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

# notebook 09's settings (its parameters cell): None means the whole split
MEDICAL = {
    "smoke": {"n_train": 300, "n_val": 150, "n_test": 200, "image_size": 128, "ft_images": 96, "ft_epochs": 1,
              "probe_epochs": 30, "batch": 32, "lr": 3e-4, "warmup_steps": 0},
    "full": {"n_train": None, "n_val": None, "n_test": None, "image_size": 224, "ft_images": None,
             "ft_epochs": {"cuda": 10, "cpu": 4}, "probe_epochs": 40, "batch": {"cuda": 64, "cpu": 32}, "lr": 3e-4,
             "warmup_steps": None},
}
# notebook 07's settings (its parameters cell)
RECIPE = {
    "smoke": {"n_train": 64, "n_eval": 48, "epochs": 1, "batch": 16, "max_len": 24},
    "full": {"n_train": 8000, "n_eval": 1000, "epochs": 4, "batch": 32, "max_len": 24},
}
# notebook 08's settings for (a), the CNN + transformer decoder (its parameters cell)
CAPTIONING = {
    "smoke": {"n_train": 200, "n_eval": 50, "epochs": 5, "d_model": 128, "layers": 2, "dropout": 0.1, "lr": 2e-3,
              "batch": 64, "scst_epochs": 1, "scst_batch": 50, "n_blind": 40},
    "full": {"n_train": 6000, "n_eval": 1000, "epochs": 15, "d_model": 256, "layers": 3, "dropout": 0.2, "lr": 8e-4,
             "batch": 64, "scst_epochs": 1, "scst_batch": 50, "n_blind": 200},
}
RECIPES = {"recipe": RECIPE, "captioning": CAPTIONING, "medical": MEDICAL}


def settings_for(recipe: str, profile: str, device: torch.device, overrides: dict[str, Any] | None = None) -> dict:
    """The recipe's settings for ``profile`` on ``device`` (a per-device value picks its entry), then ``overrides``."""
    table = RECIPES[recipe][profile]
    kind = "cuda" if device.type == "cuda" else "cpu"
    out = {k: v[kind] if isinstance(v, dict) else v for k, v in table.items()}
    for key, value in (overrides or {}).items():
        if key not in out:
            raise ValueError(f"unknown setting {key!r} for recipe {recipe!r}; its settings: {', '.join(out)}")
        out[key] = value
    return out


def _settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _softmax(logits: np.ndarray) -> np.ndarray:
    return torch.from_numpy(np.asarray(logits, dtype=np.float64)).softmax(-1).numpy()  # float64: fewer ties at 1


def _per_process_batch(batch: int) -> int:
    from mmcourse import distributed

    world = distributed.world_size()
    if batch % world:
        raise ValueError(f"the global batch {batch} does not split evenly over {world} processes; "
                         f"use --set batch={batch // world * world} or another number of processes")
    return batch // world


# ---------------------------------------------------------------- recipe (notebook 07)

def recipe_comparison(s: dict, run_dir: Path, device: torch.device, resume: bool = True, progress: bool = True,
                      **levers: Any) -> dict:
    """Notebook 07's comparison with settings ``s`` (:data:`RECIPE`): every method of
    :data:`mmcourse.recipe.METHODS` trained by :func:`mmcourse.recipe.train_method` (checkpoints per
    method in ``run_dir``), the best chosen on validation accuracy, the test set touched once."""
    import re

    from torch.utils.data import DataLoader

    from mmcourse import distributed, metrics, pretrained, recipe

    encoder0, tokenizer = pretrained.load("text", device=device)
    train_set, info = recipe.subject_task("train", s["n_train"])
    val_set, _ = recipe.subject_task("val", s["n_eval"])
    collate = recipe.caption_collate(tokenizer, s["max_len"])
    train_loader = DataLoader(train_set, batch_size=_per_process_batch(s["batch"]), shuffle=True, collate_fn=collate)
    val_loader = DataLoader(val_set, batch_size=s["batch"], collate_fn=collate)
    rows, models = {}, {}
    for method in recipe.METHODS:
        slug = re.sub(r"[^a-z0-9]+", "_", method.lower()).strip("_")
        models[method], _, _, row = recipe.train_method(encoder0, method, train_loader, val_loader, s["epochs"],
                                                        checkpoint_dir=run_dir / slug, resume=resume, device=device,
                                                        progress=progress, **levers)
        rows[method] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
    out = {"data_source": info.source, "n": {"train": len(train_set), "val": len(val_set)}, "methods": rows}
    if not distributed.is_main():
        return out
    chosen = max(rows, key=lambda m: rows[m]["val_acc"])
    test_set, _ = recipe.subject_task("test", s["n_eval"])
    acc = recipe.eval_fn(models[chosen].eval(), DataLoader(test_set, batch_size=s["batch"], collate_fn=collate))["val_acc"]
    k = round(acc * len(test_set))
    low, high = metrics.wilson_interval(k, len(test_set))
    return out | {"chosen": chosen, "test_acc": round(acc, 4), "test_acc_ci95": [round(low, 4), round(high, 4)],
                  "n_test": len(test_set)}


# ---------------------------------------------------------------- captioning (notebook 08)

def captioning_decoder(s: dict, run_dir: Path, device: torch.device, resume: bool = True, progress: bool = True,
                       **levers: Any) -> dict:
    """Notebook 08 (a) with settings ``s`` (:data:`CAPTIONING`): cached MobileNetV2 grid features of
    Flickr8k's official splits, the word vocabulary, the decoder trained by cross-entropy then
    self-critically (each kept only if dev CIDEr-D rose), beam width and α chosen on dev, and the
    test set once, beside the blind and shuffled-image controls (scores × 100)."""
    from mmcourse import captioning, data, distributed, metrics, pretrained

    splits = {sp: data.load("flickr8k", split=sp, view="image", image_size=224) for sp in ("train", "val", "test")}
    sizes = {"train": s["n_train"], "val": s["n_eval"], "test": s["n_eval"]}
    index = {sp: list(range(min(sizes[sp], len(ds)))) for sp, ds in splits.items()}
    refs = {sp: [splits[sp].records[i]["captions"] for i in index[sp]] for sp in splits}
    cnn, _ = pretrained.load("image", device=device)
    cnn.eval()
    if not distributed.is_main():  # rank 0 computes the grid features once; the others read its cache
        distributed.barrier()
    feats = {sp: captioning.grid_features(cnn, splits[sp], index[sp], image_size=224) for sp in splits}
    if distributed.is_main():
        distributed.barrier()
    train_captions = [c for caps in refs["train"] for c in caps]
    vocab = captioning.Vocab.build(train_captions, min_count=5)
    max_len = 24
    train_feats = torch.from_numpy(feats["train"])
    loader = captioning.caption_loader(train_feats, vocab.encode_batch(train_captions, max_len),
                                       torch.arange(len(index["train"])).repeat_interleave(5),
                                       _per_process_batch(s["batch"]))
    torch.manual_seed(0)
    decoder = captioning.CaptionDecoder(len(vocab), d_model=s["d_model"], n_layers=s["layers"],
                                        n_heads=max(2, s["d_model"] // 64), dropout=s["dropout"], max_len=max_len)
    dev_scores = captioning.dev_scorer(feats["val"], refs["val"], vocab)
    hist = captioning.train_decoder(decoder, loader, dev_scores, epochs=s["epochs"], lr=s["lr"], run_dir=run_dir / "xe",
                                    resume=resume, device=device, progress=progress, **levers)
    images = captioning.image_loader(train_feats, _per_process_batch(s["scst_batch"]))
    xe, scst = captioning.self_critical(decoder, images, vocab, metrics.CiderD(refs["train"]), dev_scores,
                                        epochs=s["scst_epochs"], run_dir=run_dir / "scst", resume=resume,
                                        device=device, progress=progress)
    out = {"data_source": splits["train"].info.source, "n": {sp: len(rows) for sp, rows in index.items()},
           "vocab": len(vocab), "steps": hist.step, "best_step": hist.best_step, "train_seconds": round(hist.seconds, 1),
           "dev_xe": xe, "dev_scst": scst, "kept": "self-critical" if scst["dev_cider"] > xe["dev_cider"] else
           "cross-entropy"}
    if not distributed.is_main():
        return out
    (beam, alpha), table, _ = captioning.choose_beam(decoder, feats["val"], refs["val"], vocab)
    test = captioning.score(captioning.caption(decoder, feats["test"], vocab, beam=beam, alpha=alpha)[0], refs["test"])
    shuffled = feats["test"][np.random.default_rng(0).permutation(len(feats["test"]))]
    controls = {"shuffled images": captioning.score(captioning.caption(decoder, shuffled, vocab, beam=beam,
                                                                       alpha=alpha)[0], refs["test"]),
                "blind caption": captioning.score([captioning.blind_caption(refs["train"], s["n_blind"])]
                                                  * len(refs["test"]), refs["test"])}
    rnd = lambda d: {k: round(float(v), 2) for k, v in d.items()}  # noqa: E731
    return out | {"beam": beam, "alpha": alpha, "dev_beams": {f"beam {b}, alpha {a:g}": rnd(v) for (b, a), v in table.items()},
                  "test": rnd(test), "test_controls": {k: rnd(v) for k, v in controls.items()}}


# ---------------------------------------------------------------- medical (notebook 09)

def medical(s: dict, run_dir: Path, device: torch.device, resume: bool = True, progress: bool = True,
            **levers: Any) -> dict:
    """Notebook 09's chest X-ray fine-tuning with settings ``s`` (:data:`MEDICAL`): pooled features,
    a linear probe per imbalance remedy and seed (the remedy chosen on validation AUC), full
    fine-tuning from the chosen probe (LP-FT) with checkpoints in ``run_dir``, the probe or the
    fine-tuned model chosen on validation, and the test set touched once. Returns the metrics."""
    from mmcourse import data, distributed, medical as med, pretrained
    from mmcourse.data import chest_xray

    splits = {sp: data.load("chest_xray", split=sp, image_size=s["image_size"], channels=3)
              for sp in ("train", "val", "test")}
    y_all = {sp: np.array(ds.column("label")) for sp, ds in splits.items()}
    index = {sp: med.subset_rows(n, len(splits[sp]), seed)
             for seed, (sp, n) in enumerate((("train", s["n_train"]), ("val", s["n_val"]), ("test", s["n_test"])))}
    y = {sp: y_all[sp][rows] for sp, rows in index.items()}
    cnn, _ = pretrained.load("image", device=device)
    cnn.eval()
    if not distributed.is_main():  # rank 0 computes the features once; the others read its cache
        distributed.barrier()
    x = {sp: torch.from_numpy(med.pooled_features(cnn, splits[sp], index[sp], s["image_size"], device))
         for sp in index}
    if distributed.is_main():
        distributed.barrier()
    remedy, probe, runs = med.choose_remedy(x["train"], y["train"], x["val"], y["val"], s["probe_epochs"])
    model = copy.deepcopy(cnn).cpu()
    model.classifier[1] = copy.deepcopy(probe)  # MobileNetV2 with the probe as its classifier (LP-FT)

    aug = data.transforms.image_augment(s["image_size"], scale=(0.8, 1.0), flip=False)
    train_aug = data.load("chest_xray", split="train", image_size=s["image_size"], channels=3, transform=aug)
    ft_rows = index["train"][med.subset_rows(s["ft_images"], len(index["train"]), 5)]

    def val_auc(m: torch.nn.Module) -> dict:
        return {"val_auc": med.auc(y["val"], _softmax(med.predict_logits(m, splits["val"], index["val"]))[:, 1])}

    hist = med.finetune(model, train_aug, ft_rows, y_all["train"][ft_rows], val_auc, remedy=remedy,
                        epochs=s["ft_epochs"], batch_size=_per_process_batch(s["batch"]), lr=s["lr"],
                        run_dir=run_dir, resume=resume,
                        workers=data.default_workers(train_aug) if s["ft_images"] is None else 0,
                        device=device, progress=progress, warmup_steps=s["warmup_steps"], **levers)
    out = {"remedy": remedy, "data_source": splits["train"].info.source,
           "n": {sp: len(rows) for sp, rows in index.items()}, "ft_images": len(ft_rows),
           "val_auc_probe": {r: round(float(np.mean([v["val_auc"] for v in rs])), 4) for r, rs in runs.items()},
           "steps": hist.step, "best_step": hist.best_step, "stopped_early": hist.stopped_early,
           "train_seconds": round(hist.seconds, 1)}
    if not distributed.is_main():
        return out
    # the model chosen on validation AUC, then the test set, once
    with torch.no_grad():
        probe_val = probe(x["val"]).numpy()
    val_ft = med.predict_logits(model, splits["val"], index["val"])
    aucs = {"linear probe": med.auc(y["val"], _softmax(probe_val)[:, 1]),
            "fine-tuned": med.auc(y["val"], _softmax(val_ft)[:, 1])}
    chosen = max(aucs, key=aucs.get)
    if chosen == "linear probe":
        with torch.no_grad():
            val_logits, test_logits = probe_val, probe(x["test"]).numpy()
    else:
        val_logits, test_logits = val_ft, med.predict_logits(model, splits["test"], index["test"])
    p_val, p_test = _softmax(val_logits)[:, 1], _softmax(test_logits)[:, 1]
    ci = med.delong_auc_ci(y["test"], p_test)
    points = {"youden": med.youden_threshold(y["val"], p_val), "sens95": med.sensitivity_threshold(y["val"], p_val)}
    out |= {"val_auc": {k: round(v, 4) for k, v in aucs.items()}, "chosen": chosen,
            "test_auc": round(ci["auc"], 4), "test_auc_ci95": [round(ci["low"], 4), round(ci["high"], 4)],
            "test_acc_at_0.5": round(med.medmnist_acc(y["test"], _softmax(test_logits)), 4),
            "majority_baseline_acc": round(med.majority_baseline(y_all["train"], y["test"])["acc"], 4),
            "classes": list(chest_xray.CLASSES)}
    for name, threshold in points.items():
        op = med.operating_point(y["test"], p_test, threshold)
        out[f"test_{name}"] = {"threshold_from_val": round(float(threshold), 4),
                               **{k: round(float(op[k]), 4) for k in ("acc", "sensitivity", "specificity")}}
    return out


# ---------------------------------------------------------------- the command

def run(recipe: str, profile: str = "full", out: str | Path | None = None, overrides: dict[str, Any] | None = None,
        resume: bool = True, progress: bool = True, **levers: Any) -> dict | None:
    """Run ``recipe`` and write ``results.json`` into ``out``; returns the record on rank 0, else None."""
    from mmcourse import distributed, fileio, results, runtime

    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    runtime.seed_everything(0)
    device = distributed.device_for_rank() if distributed.env_world_size() > 1 else runtime.device()
    distributed.init_from_env(device)
    settings = settings_for(recipe, profile, device, overrides)
    out = Path(out or Path("build") / "finetune" / f"{recipe}-{profile}")
    run_dir = out / "checkpoints" / _settings_hash(settings)
    if distributed.is_main():
        print(f"finetune {recipe} ({profile} profile) on {device} x {distributed.world_size()} process(es): "
              f"{json.dumps(settings)}; checkpoints in {run_dir}", flush=True)
    start = time.perf_counter()
    train = {"recipe": recipe_comparison, "captioning": captioning_decoder, "medical": medical}[recipe]
    metrics = train(settings, run_dir, device, resume=resume, progress=progress, **levers)
    if not distributed.is_main():
        return None
    if metrics.get("data_source") != "real":
        print(f"WARNING: the data source is {metrics.get('data_source')!r}, not the real dataset "
              "(set MMCOURSE_DATA_DIR): these numbers are not results", flush=True)
    record = {"recipe": recipe, "profile": profile, "metrics": metrics, "settings": settings, "levers": levers,
              "command": "python -m mmcourse finetune " + recipe + f" --profile {profile}",
              "commit": results._commit(), "hardware": results.hardware(), "device": str(device),
              "world_size": distributed.world_size(), "wall_seconds": round(time.perf_counter() - start, 1),
              **runtime.memory_report(device), "checkpoints": str(run_dir)}
    fileio.write_text_atomic(out / "results.json", json.dumps(record, indent=2, default=str) + "\n")
    print(json.dumps(metrics, indent=1, default=str), flush=True)
    print(f"results written to {out / 'results.json'}", flush=True)
    return record


def _value(text: str) -> Any:
    """A ``--set`` value: JSON (numbers, null, true) or else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mmcourse finetune", description=__doc__.splitlines()[0])
    p.add_argument("recipe", choices=sorted(RECIPES))
    p.add_argument("--profile", default="full", choices=["smoke", "full"], help="the notebook's settings (default full)")
    p.add_argument("--out", help="output folder (default build/finetune/<recipe>-<profile>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change one setting, e.g. --set ft_epochs=2 (repeatable)")
    p.add_argument("--no-resume", dest="resume", action="store_false", help="train again from the start")
    p.add_argument("--channels-last", action="store_true", help="fit(..., channels_last=True)")
    p.add_argument("--compile", action="store_true", help="fit(..., compile=True)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    a = p.parse_args(argv)
    overrides = {}
    for item in a.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--set needs KEY=VALUE, not {item!r}")
        overrides[key] = _value(value)
    levers = {k: True for k in ("channels_last", "compile") if getattr(a, k)}
    run(a.recipe, a.profile, a.out, overrides, resume=a.resume, progress=a.progress, **levers)
    return 0
