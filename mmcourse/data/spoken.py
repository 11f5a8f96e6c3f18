"""Spoken instructions, synthesised offline: questions and commands whose answer is one English word
(notebook 10, §Tasks and §"Spoken instructions").

The audio is **synthesised speech, not recordings of people**: every clip is read by the course's
``tts`` role, the neural text-to-speech voice Piper ``en_US-joe-medium`` (VITS, one speaker, CC0;
:mod:`mmcourse.pretrained`). Five templates (:data:`TEMPLATES`), numbers written as words::

    task      text                               answer        texts
    next      "What number comes after four?"    "five"            9   (zero..eight)
    previous  "What number comes before one?"    "zero"            9   (one..nine)
    plus      "What is two plus three?"          "five"           55   (a + b <= 9)
    minus     "What is nine minus four?"         "five"           55   (0 <= b <= a <= 9)
    say       "Say the word helicopter."         "helicopter"     10   (sounds of ESC-10)

"Speakers": there is one voice, so each text is read with 9 synthesis settings (:data:`VARIANTS`,
Piper's ``length_scale`` for speed and ``noise_scale`` / ``noise_w_scale`` for how much the
pitch, timbre and phoneme durations wander): 138 texts x 9 variants = 1,242 clips. That is a
strong limitation — a model that learns this voice has learnt one speaker — which notebook 10
shows by evaluating on FSDD's human speakers too.

Splits are **by question text**: a test question is never heard in training, in any variant.
Per task, the texts are ordered by the sha256 of their text and cut 70 / 10 / 20 % (train / val /
test, at least one text of every task in every split): 95 / 15 / 28 texts. A side effect worth
teaching: the "say" task has 10 texts, so its 2 test words (and its val word) are answers that
never occur in training at all.

Storage (``<MMCOURSE_CACHE_DIR>/spoken/<first 12 hex of the voice's sha256>/``): one FLAC per clip
(PCM_16, 22,050 Hz), named by its clip id (sha256 of the text, the synthesis settings and the
voice key), and ``manifest.json`` with the voice and, per clip, its text, answer, task, split,
settings, file, sha256 and duration. Synthesis is not deterministic (the noise is drawn inside
the ONNX graph), so the manifest is the record of what was generated: every file is checked
against its sha256 on :func:`load`, and a missing or changed file is made again with a warning
naming it. Clips are made on first use (only those a :func:`load` needs, ~0.25 s each on a CPU)
or all at once by :func:`generate` (``python -m mmcourse fetch data spoken``); the manifest is
rewritten (atomically, merged with what is there) after every :data:`BATCH` clips, so an
interrupted run keeps what it made.

>>> from mmcourse import data
>>> train = data.load("spoken", "train", per_task=4, variants=3)   # 5 tasks x 4 texts x 3 variants
>>> train[0]["text"], train[0]["answer"], train[0]["audio"].shape   # 16 kHz float32 waveform
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmcourse import config
from mmcourse.data import files, sources
from mmcourse.data.errors import DataError, DataWarning
from mmcourse.data.records import Records
from mmcourse.fileio import atomic_path, sha256_file, write_text_atomic

NAME = "spoken"
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SAY_WORDS = ("dog", "rooster", "rain", "waves", "fire", "baby", "clock", "helicopter", "chainsaw", "sneeze")
"""One word per ESC-10 class, in ESC-10's order (dog, rooster, rain, sea_waves, crackling_fire, ...)."""
ANSWERS = DIGIT_WORDS + SAY_WORDS
"""Every answer there is: a generation that is none of these is an invalid output."""
TEMPLATES = {
    "next": "What number comes after {n}?",
    "previous": "What number comes before {n}?",
    "plus": "What is {a} plus {b}?",
    "minus": "What is {a} minus {b}?",
    "say": "Say the word {w}.",
}
TASKS = tuple(TEMPLATES)
SPLITS = ("train", "val", "test")
SPLIT_SHARES = {"train": 0.7, "val": 0.1, "test": 0.2}
_SPEEDS = {"fast": 0.8, "medium": 1.0, "slow": 1.25}  # length_scale: > 1 is slower
_NOISES = {"steady": (0.333, 0.4), "default": (0.667, 0.8), "lively": (1.0, 1.2)}  # (noise_scale, noise_w_scale)
_ORDER = ("medium-default", "fast-lively", "slow-steady",  # three Latin squares: any first 3, 6 or 9
          "fast-steady", "slow-default", "medium-lively",   # cover every speed and every noise level
          "slow-lively", "medium-steady", "fast-default")
VARIANTS: dict[str, dict[str, float]] = {
    name: {"length_scale": _SPEEDS[name.split("-")[0]], "noise_scale": _NOISES[name.split("-")[1]][0],
           "noise_w_scale": _NOISES[name.split("-")[1]][1]} for name in _ORDER}
"""The 9 "speakers": Piper settings ``{"length_scale", "noise_scale", "noise_w_scale"}`` by name.
``medium-default`` is the voice's own default; ``variants=3`` takes the first three of this order."""
SAMPLE_RATE = 22050  # Piper en_US-joe-medium; clips are stored at this rate
BATCH = 32  # clips synthesised between two manifest writes
LICENCE = ("CC0 1.0 (the Piper voice en_US-joe-medium and its training data); the texts and the clips are made "
           "by mmcourse, same terms as the course code")
CITATION = ("Synthesised by mmcourse with Piper (github.com/OHF-Voice/piper1-gpl, piper-tts on PyPI) and its voice "
            "en_US-joe-medium (VITS, NabuCasa voice-datasets, CC0). Not a published dataset.")
HOMEPAGE = "https://github.com/OHF-Voice/piper1-gpl"
FIX = "run `python -m mmcourse fetch data spoken` (or load with generate=True) to make the missing clips"


class SpokenInfo(sources.Info):
    """:class:`~mmcourse.data.sources.Info` that says what the clips are: synthesised, not a stand-in."""

    def __str__(self) -> str:
        sizes = ", ".join(f"{k} {v:,}" for k, v in self.splits.items())
        return (f"{self.name} [SYNTHESISED speech, one TTS voice] split={self.split!r} ({sizes} clips in the full "
                f"set) from {self.path}")


# ---------------------------------------------------------------- texts, answers, splits

def word(n: int) -> str:
    """``3`` -> ``"three"`` (0-9)."""
    return DIGIT_WORDS[n]


def _instances(task: str) -> list[dict]:
    """Every ``{text, answer, task}`` of one template, in the template's natural order."""
    t = TEMPLATES[task]
    if task == "next":
        pairs = [(t.format(n=word(n)), word(n + 1)) for n in range(9)]
    elif task == "previous":
        pairs = [(t.format(n=word(n)), word(n - 1)) for n in range(1, 10)]
    elif task == "plus":
        pairs = [(t.format(a=word(a), b=word(b)), word(a + b)) for a in range(10) for b in range(10 - a)]
    elif task == "minus":
        pairs = [(t.format(a=word(a), b=word(b)), word(a - b)) for a in range(10) for b in range(a + 1)]
    else:
        pairs = [(t.format(w=w), w) for w in SAY_WORDS]
    return [{"text": text, "answer": answer, "task": task} for text, answer in pairs]


def text_hash(text: str) -> str:
    """sha256 of a text: the fixed order of texts within a task (splits, ``per_task``)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _split_sizes(n: int) -> dict[str, int]:
    """Texts per split for a task of ``n`` texts: 20 % test and 10 % val (rounded, at least 1 each)."""
    test = max(1, int(SPLIT_SHARES["test"] * n + 0.5))
    val = max(1, int(SPLIT_SHARES["val"] * n + 0.5))
    return {"train": n - val - test, "val": val, "test": test}


@functools.cache
def _questions() -> tuple[dict, ...]:
    out = []
    for task in TASKS:
        rows = sorted(_instances(task), key=lambda r: text_hash(r["text"]))
        sizes = _split_sizes(len(rows))
        cuts = iter([s for s in SPLITS for _ in range(sizes[s])])
        out += [{**r, "split": next(cuts)} for r in rows]
    return tuple(out)


def questions() -> list[dict]:
    """Every template instance ``{text, answer, task, split}`` (138; no audio, no model needed).

    Ordered by task (:data:`TASKS`), then by the sha256 of the text: the fixed order in which
    ``per_task=n`` takes the first ``n`` texts of each task (so a smoke subset is part of the full set).
    """
    return [dict(q) for q in _questions()]


def select(split: str = "train", *, tasks: Sequence[str] | None = None, per_task: int | None = None) -> list[dict]:
    """The questions of ``split`` (``"all"`` for every split), ``per_task`` first texts of each task."""
    if split not in (*SPLITS, "all"):
        raise ValueError(f"spoken split must be one of {(*SPLITS, 'all')}, not {split!r}")
    tasks = _check_tasks(tasks)
    if per_task is not None and per_task < 1:
        raise ValueError(f"per_task must be a positive number of texts per task, not {per_task!r}")
    out = []
    for task in tasks:
        rows = [q for q in questions() if q["task"] == task and split in ("all", q["split"])]
        out += rows[:per_task] if per_task else rows
    return out


def _check_tasks(tasks: Sequence[str] | None) -> tuple[str, ...]:
    if tasks is None:
        return TASKS
    tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
    unknown = [t for t in tasks if t not in TEMPLATES]
    if unknown:
        raise ValueError(f"unknown spoken task(s) {unknown}; tasks are {', '.join(TASKS)}")
    return tasks


def variant_names(variants: int | Sequence[str] | None = None) -> list[str]:
    """``None``: all 9; ``n``: the first ``n`` of :data:`VARIANTS`; a list: those names (checked)."""
    if variants is None:
        return list(VARIANTS)
    if isinstance(variants, int):
        if not 1 <= variants <= len(VARIANTS):
            raise ValueError(f"variants={variants}: choose 1 to {len(VARIANTS)} (or a list of names)")
        return list(VARIANTS)[:variants]
    names = [variants] if isinstance(variants, str) else list(variants)
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown spoken variant(s) {unknown}; variants are {', '.join(VARIANTS)}")
    return names


# ---------------------------------------------------------------- the voice and where its clips live

def voice_key(fetch: bool = True) -> str | None:
    """``"sha256:<hex>"`` of the tts voice's weights (its clips are stored under this key).

    The pinned voice's key comes from its manifest (:func:`mmcourse.pretrained.role_key`); an
    override (``MMCOURSE_MODEL_TTS=path.onnx``) is hashed. ``fetch=True`` fetches the pinned voice
    when it is not in the model cache yet; ``fetch=False`` returns ``None`` then.
    """
    from mmcourse import pretrained

    if key := pretrained.role_key("tts"):
        return key
    override = os.environ.get("MMCOURSE_MODEL_TTS", "").strip()
    if override:
        if not Path(override).is_file():
            raise DataError(f"MMCOURSE_MODEL_TTS={override}: no such file\n  fix: point it at a Piper voice's "
                            ".onnx file (its .onnx.json beside it), or unset it to use the pinned voice")
        return f"sha256:{sha256_file(override)}"
    if not fetch:
        return None
    pretrained.ensure("tts")
    return pretrained.role_key("tts")


def folder(key: str | None = None) -> Path:
    """``<cache>/spoken/<first 12 hex of the voice key>``: the clips and ``manifest.json`` of one voice."""
    key = key or voice_key()
    return config.cache_dir() / NAME / key.split(":")[-1][:12]


def clip_id(text: str, variant: str, key: str) -> str:
    """16 hex of sha256(text, synthesis settings, voice key): the clip's file name."""
    doc = json.dumps({"text": text, **VARIANTS[variant], "voice": key}, sort_keys=True)
    return hashlib.sha256(doc.encode("utf-8")).hexdigest()[:16]


_VOICES: dict[str, tuple[Any, Any]] = {}


def _voice(key: str) -> tuple[Any, Any]:
    """The Piper voice and its default SynthesisConfig, loaded (and verified) once per process."""
    if key not in _VOICES:
        from mmcourse import pretrained
        _VOICES.clear()
        _VOICES[key] = pretrained.load("tts")
    return _VOICES[key]


def synthesize(voice: Any, syn_config: Any, text: str, variant: str) -> np.ndarray:
    """``text`` read by ``voice`` with the settings of ``variant``: float32 ``(T,)`` at 22,050 Hz."""
    cfg = dataclasses.replace(syn_config, **VARIANTS[variant])
    return np.concatenate([c.audio_float_array for c in voice.synthesize(text, syn_config=cfg)])


# ---------------------------------------------------------------- the manifest

def manifest_path(where: Path) -> Path:
    return where / "manifest.json"


def read_manifest(where: Path) -> dict:
    """``manifest.json`` of a voice folder (an empty one if absent; an unreadable one is set aside with a warning)."""
    path = manifest_path(where)
    if not path.is_file():
        return {"clips": {}}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc.get("clips"), dict):
            raise ValueError("no 'clips' table")
        return doc
    except (OSError, ValueError, AttributeError) as exc:
        warnings.warn(f"{path}: unreadable manifest ({exc}); its clips are made again", DataWarning, stacklevel=3)
        return {"clips": {}}


def write_manifest(where: Path, key: str, clips: dict[str, dict]) -> None:
    """Merge ``clips`` into the manifest on disk and write it atomically."""
    from mmcourse import pretrained

    merged = {**read_manifest(where)["clips"], **clips}
    doc = {"about": "spoken instructions synthesised by mmcourse.data.spoken (notebook 10); synthesis is not "
                    "deterministic, so this is the record of what was generated: every file is checked against "
                    "its sha256 on load",
           "voice": pretrained.describe("tts"), "voice_sha256": key.split(":")[-1], "sample_rate": SAMPLE_RATE,
           "clips": dict(sorted(merged.items()))}
    write_text_atomic(manifest_path(where), json.dumps(doc, indent=1) + "\n")


def _stale(where: Path, wanted: list[dict], clips: dict[str, dict], make: bool = True) -> list[dict]:
    """The wanted clips to make: not in the manifest, or their file missing or changed (warned about)."""
    todo, then = [], ": synthesising it again" if make else ""
    for c in wanted:
        entry, path = clips.get(c["clip"]), where / f"{c['clip']}.flac"
        if entry is None:
            todo.append(c)
        elif not path.is_file():
            warnings.warn(f"{path} ({c['text']!r}, {c['variant']}) is missing{then}",
                          DataWarning, stacklevel=3)
            todo.append(c)
        elif (found := sha256_file(path)) != entry.get("sha256"):
            warnings.warn(f"{path} ({c['text']!r}, {c['variant']}) has changed (sha256 {found[:12]}..., the manifest "
                          f"says {str(entry.get('sha256'))[:12]}...){then}", DataWarning,
                          stacklevel=3)
            todo.append(c)
    return todo


def _make(where: Path, key: str, todo: list[dict], progress: bool) -> dict[str, dict]:
    """Synthesise ``todo`` into FLACs; the manifest is written after every :data:`BATCH` clips and at the end."""
    import soundfile as sf
    from tqdm.auto import tqdm

    voice, syn_config = _voice(key)
    done: dict[str, dict] = {}
    pending: dict[str, dict] = {}
    try:
        for c in tqdm(todo, desc="synthesising spoken clips", unit="clip", disable=not progress):
            wave = np.clip(synthesize(voice, syn_config, c["text"], c["variant"]), -1.0, 1.0)
            path = where / f"{c['clip']}.flac"
            with atomic_path(path) as tmp:
                sf.write(tmp, wave, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
            pending[c["clip"]] = {**{k: c[k] for k in ("text", "answer", "task", "split", "variant")},
                                  **VARIANTS[c["variant"]], "file": path.name, "sha256": sha256_file(path),
                                  "seconds": round(len(wave) / SAMPLE_RATE, 4)}
            if len(pending) >= BATCH:
                write_manifest(where, key, pending)
                done.update(pending)
                pending = {}
    finally:  # an interrupted run keeps every clip it finished
        if pending:
            write_manifest(where, key, pending)
            done.update(pending)
    return done


def _ensure(wanted: list[dict], key: str, progress: bool, make: bool) -> dict[str, dict]:
    """Check the wanted clips against the manifest, make the missing or changed ones; return their entries."""
    where = folder(key)
    clips = read_manifest(where)["clips"]
    todo = _stale(where, wanted, clips, make)
    if todo and not make:
        raise DataError(f"{where}: {len(todo)} of the {len(wanted)} spoken clips asked for are not generated "
                        f"(or do not match the manifest), e.g. {todo[0]['text']!r} ({todo[0]['variant']})\n"
                        f"  fix: {FIX}")
    if todo:
        where.mkdir(parents=True, exist_ok=True)
        clips = {**clips, **_make(where, key, todo, progress)}
    return clips


def _wanted(split: str, variants, tasks, per_task, key: str) -> list[dict]:
    return [{**q, "variant": v, "clip": clip_id(q["text"], v, key)}
            for q in select(split, tasks=tasks, per_task=per_task) for v in variant_names(variants)]


# ---------------------------------------------------------------- public API

def generate(splits: Sequence[str] = SPLITS, variants: int | Sequence[str] | None = None,
             tasks: Sequence[str] | None = None, per_task: int | None = None, progress: bool = True) -> Path:
    """Make (or check) the clips of ``splits``: by default the full set, 1,242 clips. Returns the folder.

    Clips already stored and matching the manifest are kept; the rest are synthesised.
    """
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    key = voice_key()
    wanted = [c for s in splits for c in _wanted(s, variants, tasks, per_task, key)]
    _ensure(wanted, key, progress, make=True)
    return folder(key)


def load(split: str = "train", *, sample_rate: int = 16000, variants: int | Sequence[str] | None = None,
         tasks: Sequence[str] | None = None, per_task: int | None = None, generate: bool = True,
         progress: bool = True) -> Records:
    """Spoken instructions of ``split`` (train / val / test / all) as a Dataset (notebook 10, §Tasks).

    Samples: ``{"audio" float32 (T,) at sample_rate, "sample_rate", "text", "answer", "task",
    "variant", "split", "path"}``. ``variants``: ``None`` (all 9), ``n`` (the first n) or names;
    ``tasks``: names of :data:`TEMPLATES`; ``per_task``: the first n texts of each task. Clips not
    stored yet are synthesised (``generate=False`` raises instead); every stored clip used is
    checked against its sha256 in the manifest.
    """
    key = voice_key(fetch=generate)
    if key is None:
        raise DataError("spoken: the tts model (Piper voice) is not fetched, so no clip can be found or made\n"
                        "  fix: run `make models` (or `python -m mmcourse fetch models tts`), or load with "
                        "generate=True")
    wanted = _wanted(split, variants, tasks, per_task, key)
    clips = _ensure(wanted, key, progress, make=generate)
    where = folder(key)
    records = [{**c, "path": str(where / f"{c['clip']}.flac"), "seconds": clips[c["clip"]]["seconds"]}
               for c in wanted]
    from mmcourse import pretrained
    names = variant_names(variants)
    sizes = {s: len(select(s)) * len(VARIANTS) for s in SPLITS}
    info = SpokenInfo(NAME, "tts", split, LICENCE, CITATION, sizes, path=str(where), classes=list(ANSWERS),
                      notes=[f"SYNTHESISED speech: every clip is read by a neural text-to-speech voice, "
                             f"{pretrained.describe('tts')}; no human speaker. The 'speakers' are {len(VARIANTS)} "
                             "synthesis settings of that one voice.",
                             f"this selection: {len(records)} clips = {len(records) // max(1, len(names))} texts x "
                             f"{len(names)} variants ({', '.join(names)})",
                             "split by question text: no test or val text is heard in training, in any variant"],
                      homepage=HOMEPAGE)
    sources.record(info, f"{split}: synthesised by the tts role into {where}")
    return Records(records, functools.partial(read_sample, sample_rate=sample_rate), info)


def speak(requests: Sequence[tuple[str, str]], *, task: str, split: str, sample_rate: int = 16000,
          generate: bool = True, progress: bool = True) -> Records:
    """Any texts read by the tts voice: ``requests`` are ``(text, variant)`` pairs (notebook 11's spoken
    questions about images, :mod:`mmcourse.data.instruct`).

    Stored beside the template clips, under the same manifest and checks as :func:`load`; samples
    as :func:`load`'s, with ``answer`` empty (the answer depends on an image, not on the text).
    """
    key = voice_key(fetch=generate)
    if key is None:
        raise DataError("spoken: the tts model (Piper voice) is not fetched\n  fix: run `make models`")
    wanted, seen = [], set()
    for text, variant in requests:
        variant_names([variant])
        c = {"text": text, "answer": "", "task": task, "split": split, "variant": variant,
             "clip": clip_id(text, variant, key)}
        if c["clip"] not in seen:
            seen.add(c["clip"])
            wanted.append(c)
    clips = _ensure(wanted, key, progress, make=generate)
    where = folder(key)
    by_clip = {c["clip"]: {**c, "path": str(where / f"{c['clip']}.flac"), "seconds": clips[c["clip"]]["seconds"]}
               for c in wanted}
    records = [by_clip[clip_id(text, variant, key)] for text, variant in requests]
    from mmcourse import pretrained
    info = SpokenInfo(NAME, "tts", split, LICENCE, CITATION, {split: len(by_clip)}, path=str(where),
                      notes=[f"SYNTHESISED speech ({pretrained.describe('tts')}): {len(by_clip)} distinct clips "
                             f"of {task!r} texts"], homepage=HOMEPAGE)
    sources.record(info, f"{split}: {task} synthesised by the tts role into {where}")
    return Records(records, functools.partial(read_sample, sample_rate=sample_rate), info)


def read_sample(record: dict, sample_rate: int = 16000) -> dict:
    """One clip -> sample dict; resampled from 22,050 Hz with torchaudio."""
    wave, sr = files.read_audio(record["path"], None, use_cache=False)
    if sr != sample_rate:
        import torchaudio.functional as AF
        wave = AF.resample(wave, sr, sample_rate)
    return {"audio": wave, "sample_rate": sample_rate,
            **{k: record[k] for k in ("text", "answer", "task", "variant", "split", "path")}}


def summary() -> dict:
    """Status row for ``data.describe()``: how many of the 1,242 clips are stored (reads only the manifest)."""
    sizes = {s: len(select(s)) * len(VARIANTS) for s in SPLITS}
    key = voice_key(fetch=False)
    if key is None:
        return {"status": "not generated", "path": str(config.cache_dir() / NAME), "splits": sizes,
                "detail": "needs the tts model (make models); then made on first use or by "
                          "`python -m mmcourse fetch data spoken`"}
    where = folder(key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        stored = read_manifest(where)["clips"]
    full = {c["clip"] for s in SPLITS for c in _wanted(s, None, None, None, key)}
    have = len(full & set(stored))
    status = "generated" if have == len(full) else "partly generated" if have else "not generated"
    return {"status": status, "path": str(where), "splits": sizes,
            "detail": f"{have:,} of {len(full):,} clips stored (synthesised by the tts voice; the rest are made on "
                      "first use or by `python -m mmcourse fetch data spoken`)"}
