"""Instruction data for the capstone (notebook 11), built offline from real datasets' own labels.

Every example is a prompt with modality markers (``<image>``, ``<audio>``: :mod:`mmcourse.mllm`),
one short answer, and *references* to its inputs (a Flickr8k image id, an ESC-10 or FSDD file, or
a spoken question), never the pixels or samples: the notebook turns references into cached
features. The answers come from the datasets' labels and captions, by rules stated here:

    task      inputs          prompt (abridged)                                  answer            source of truth
    describe  image           "Describe the picture in one sentence."            a caption         Flickr8k captions
    yesno     image           "Is there a dog in the picture? Answer yes or no." yes / no          >= 2 of 5 captions name it / none does
    colour    image           "What colour is the dog?"                           black/brown/white  >= 2 captions, all agreeing, one dog
    digit     audio           "Which digit is spoken?"                            zero..nine        FSDD label
    sound     audio           "What sound is this?"                               "sea waves", ...  ESC-10 label
    av        image + audio   "Could this sound come from this scene?"           yes / no          image's captions name the sound's source
    spoken    image + audio   the yesno question, *spoken* (tts role)             yes / no          as yesno

**Decisions, and why** (notebook 11, §Instruction data):

* *yes/no*: an object counts as present when at least 2 of the 5 captions name it (one caption
  can be wrong) and as absent when none does; images with exactly one mention are not asked
  about that object. Per object and per template, "yes" and "no" are exactly balanced: the
  question alone says nothing about the answer. The objects are ones annotators reliably
  mention (a dog, a ball, snow...), not background that captions often leave out (grass, water).
* *colour*: only for images with one dog (no caption uses a plural), where at least 2 captions
  give the dog a single colour and no caption disagrees ("black and white" counts as
  disagreement). Colours with fewer than 10 images in a split are dropped; the rest are balanced.
* *counting* was tried and left out: with the same rule only 10 test images have two dogs.
* *audio-visual correspondence* (Arandjelović & Zisserman 2017): an image belongs to an ESC-10
  class when at least 2 captions name its source (:data:`AV_SOURCES`) and no caption names
  another class's source. Classes with fewer than :data:`AV_MIN_IMAGES` images in any split are
  dropped (and reported by :func:`av_counts`); the largest class is cut so that it is at most
  half of the images (:func:`av_sizes`). Each image is paired once with a clip of its class
  ("yes") and once with a clip of another kept class ("no"), and every sound class is "yes" as
  often as "no": neither the image nor the sound alone predicts the answer.
* *spoken*: the yes/no examples again, with the question read by the course's ``tts`` voice
  (:mod:`mmcourse.data.spoken`, :func:`~mmcourse.data.spoken.speak`); train, val and test use
  different synthesis settings (:data:`SPOKEN_VARIANTS`), so no clip is in two splits.

**Splits** follow the sources: Flickr8k's official image splits; ESC-10 test fold 1, val fold 2,
train folds 3-5 (clips of one recording share a fold); FSDD by speaker (test ``george``, val
``lucas``, train the other four), so no image, clip or speaker is in two splits.

Built examples are cached as JSON under ``<MMCOURSE_CACHE_DIR>/instruct/`` keyed by the sha256
of everything they are built from, with ``manifest.json`` (per split: file, sha256, counts).

>>> from mmcourse.data import instruct
>>> test = instruct.examples("test")
>>> test[0]["task"], test[0]["prompt"], test[0]["answer"], test[0]["image"]
"""
from __future__ import annotations

import hashlib
import json
import random
import re
import warnings
from collections import Counter
from pathlib import Path

from mmcourse import config
from mmcourse.data.errors import DataError, DataWarning
from mmcourse.fileio import sha256_file, write_text_atomic

NAME = "instruct"
VERSION = 1  # bump when a rule below changes what is built
SPLITS = ("train", "val", "test")
TASKS = ("describe", "yesno", "colour", "digit", "sound", "av", "spoken")

DESCRIBE = "<image>Describe the picture in one sentence."
YESNO = {"is_there": "<image>Is there a {o} in the picture? Answer yes or no.",
         "does_show": "<image>Does the picture show a {o}? Answer yes or no."}
COLOUR = "<image>What colour is the dog? Answer with one word."
DIGIT = "<audio>Which digit is spoken? Answer with one word."
SOUND = "<audio>What sound is this? Answer with the name of the sound."
AV = "<image><audio>Could this sound come from this scene? Answer yes or no."
SPOKEN = "<image><audio>Answer the spoken question about the picture with yes or no."

OBJECTS = {  # object -> the words that name it in a caption (whole words, any case)
    "dog": r"dogs?|pupp(?:y|ies)",
    "ball": r"balls?|football|soccer|basketball|volleyball",
    "bicycle": r"bicycles?|bikes?|cyclists?|bikers?|bmx",
    "snow": r"snow\w*",
    "beach": r"beach(?:es)?",
    "boat": r"boats?|kayaks?|canoes?",
    "car": r"cars?",
}
COLOURS = ("black", "brown", "white", "tan", "gray", "golden", "yellow")
MIN_COLOUR_IMAGES = 10
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
AV_SOURCES = {  # ESC-10 category -> the words in a caption that name where that sound comes from
    "dog": r"dogs?|pupp(?:y|ies)", "rooster": r"roosters?|chickens?|hens?", "rain": r"rain\w*",
    "sea_waves": r"waves?|ocean|sea|surf\w*|beach(?:es)?", "crackling_fire": r"fires?|campfires?|bonfires?|fireplaces?",
    "crying_baby": r"bab(?:y|ies)|infants?", "clock_tick": r"clocks?", "person_sneeze": r"sneez\w*",
    "helicopter": r"helicopters?", "chainsaw": r"chainsaws?",
}
AV_MIN_IMAGES = 10
ESC_FOLDS = {"train": (3, 4, 5), "val": (2,), "test": (1,)}
FSDD_SPEAKERS = {"val": ("lucas",), "test": ("george",)}  # train: every other speaker
SPOKEN_VARIANTS = {"train": ("medium-default", "fast-lively", "slow-steady", "fast-steady", "slow-default",
                             "medium-lively"), "val": ("slow-lively",), "test": ("medium-steady", "fast-default")}
"""Synthesis settings of :mod:`mmcourse.data.spoken` per split: no spoken clip is in two splits."""


def _words(pattern: str) -> re.Pattern:
    return re.compile(rf"\b(?:{pattern})\b", re.IGNORECASE)


def mentions(captions: list[str], pattern: str) -> int:
    """How many of the captions name it (``pattern``: words, as in :data:`OBJECTS`)."""
    rx = _words(pattern)
    return sum(bool(rx.search(c)) for c in captions)


def example_id(*parts: object) -> str:
    """16 hex of the sha256 of the parts: a stable id (and the order of a seeded draw)."""
    return hashlib.sha256(json.dumps(parts, default=str).encode("utf-8")).hexdigest()[:16]


def _ex(task: str, template: str, prompt: str, answer: str, split: str, image: str | None = None,
        audio: dict | None = None, **meta) -> dict:
    return {"id": example_id(task, template, prompt, image, audio, answer), "task": task, "template": template,
            "prompt": prompt, "answer": answer, "image": image, "audio": audio, "split": split, **meta}


# ---------------------------------------------------------------- image tasks

def describe(images: dict[str, list[str]], split: str) -> list[dict]:
    """One "describe" example per image; the answer is one caption (chosen by hash), all five are references."""
    out = []
    for name, caps in images.items():
        k = int(example_id(name), 16) % len(caps)
        out.append(_ex("describe", "describe", DESCRIBE, caps[k].rstrip(" ."), split, name, refs=caps))
    return out


def yesno(images: dict[str, list[str]], split: str, per_object: int | None = None, seed: int = 0) -> list[dict]:
    """Yes/no object questions, exactly balanced per object and per template (see the module's rules).

    ``per_object``: at most this many "yes" images per object (as many "no"), drawn by a seeded shuffle.
    """
    out = []
    for obj, words in OBJECTS.items():
        n = {name: mentions(caps, words) for name, caps in images.items()}
        pos = sorted(k for k, v in n.items() if v >= 2)
        neg = sorted(k for k, v in n.items() if v == 0)
        rng = random.Random(f"{seed}|{split}|{obj}")
        rng.shuffle(pos)
        rng.shuffle(neg)
        m = min(len(pos), len(neg), per_object or len(pos))
        templates = list(YESNO)
        for i in range(m):
            t = templates[i % len(templates)]
            for name, answer in ((pos[i], "yes"), (neg[i], "no")):
                out.append(_ex("yesno", t, YESNO[t].format(o=obj), answer, split, name, object=obj))
    return out


_COLOUR = re.compile(rf"\b({'|'.join(COLOURS)}|grey)\s+(?:and\s+({'|'.join(COLOURS)}|grey)\s+)?"
                     r"(?:[a-z]+\s+)?(?:dog|puppy)\b", re.IGNORECASE)
_PLURAL_DOGS = _words(r"dogs|puppies")


def dog_colour(captions: list[str]) -> str | None:
    """The one dog's colour if the captions state it unambiguously, else ``None`` (see the module's rules)."""
    if any(_PLURAL_DOGS.search(c) for c in captions):
        return None
    said = [("mixed" if m.group(2) else m.group(1).lower().replace("grey", "gray"))
            for c in captions for m in _COLOUR.finditer(c)]
    return said[0] if len(said) >= 2 and len(set(said)) == 1 and said[0] != "mixed" else None


def colour(images: dict[str, list[str]], split: str, seed: int = 0) -> list[dict]:
    """Colour questions, balanced over the colours that have at least :data:`MIN_COLOUR_IMAGES` images."""
    by_colour: dict[str, list[str]] = {}
    for name, caps in images.items():
        if c := dog_colour(caps):
            by_colour.setdefault(c, []).append(name)
    kept = {c: sorted(v) for c, v in by_colour.items() if len(v) >= MIN_COLOUR_IMAGES}
    if not kept:
        return []
    m = min(len(v) for v in kept.values())
    out = []
    for c, names in sorted(kept.items()):
        random.Random(f"{seed}|{split}|{c}").shuffle(names)
        out += [_ex("colour", "colour", COLOUR, c, split, name) for name in names[:m]]
    return out


# ---------------------------------------------------------------- audio tasks

def digits(fsdd: list[dict], split: str) -> list[dict]:
    """FSDD clips of this split's speakers (:data:`FSDD_SPEAKERS`), answered with the digit's word."""
    return [_ex("digit", "digit", DIGIT, DIGIT_WORDS[r["label"]], split,
                audio={"source": "fsdd", "clip": Path(str(r["path"])).stem}, speaker=r["speaker"])
            for r in fsdd if fsdd_split(r["speaker"]) == split]


def fsdd_split(speaker: str) -> str:
    """The split of an FSDD speaker: val and test are one held-out speaker each, train the rest."""
    return next((s for s, who in FSDD_SPEAKERS.items() if speaker in who), "train")


def esc_split(fold: int) -> str:
    return next(s for s, folds in ESC_FOLDS.items() if fold in folds)


def sounds(esc: list[dict], split: str) -> list[dict]:
    """ESC-10 clips of this split's folds (:data:`ESC_FOLDS`), answered with the class name ("sea waves")."""
    return [_ex("sound", "sound", SOUND, r["category"].replace("_", " "), split, audio=_esc_ref(r),
                category=r["category"])
            for r in esc if esc_split(r["fold"]) == split]


def _esc_ref(r: dict) -> dict:
    return {"source": "esc10", "clip": Path(str(r["path"])).stem}


# ---------------------------------------------------------------- image + audio tasks

def av_classes(captions: list[str]) -> list[str]:
    """The ESC-10 categories whose source the captions name (by :data:`AV_SOURCES`), with their counts >= 1."""
    return [c for c, words in AV_SOURCES.items() if mentions(captions, words)]


def av_images(images: dict[str, list[str]]) -> dict[str, list[str]]:
    """``{category: [image ids]}``: images that >= 2 captions tie to one sound source and none to another."""
    out: dict[str, list[str]] = {}
    for name, caps in images.items():
        named = av_classes(caps)
        if len(named) == 1 and mentions(caps, AV_SOURCES[named[0]]) >= 2:
            out.setdefault(named[0], []).append(name)
    return {c: sorted(v) for c, v in sorted(out.items())}


def av_counts(images_by_split: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, int]]:
    """``{category: {split: images}}`` for every ESC-10 category (0 where no image qualifies)."""
    per = {s: av_images(imgs) for s, imgs in images_by_split.items()}
    return {c: {s: len(per[s].get(c, [])) for s in per} for c in AV_SOURCES}


def av_kept(counts: dict[str, dict[str, int]]) -> list[str]:
    """Categories with at least :data:`AV_MIN_IMAGES` images in every split."""
    return [c for c, n in counts.items() if min(n.values()) >= AV_MIN_IMAGES]


def av_sizes(available: dict[str, int], per_class: int | None = None) -> dict[str, int]:
    """Images per kept class: all there are, capped at ``per_class`` and so that no class is more than half.

    The largest class is cut to the sum of the others: only then can every image get a mismatched
    sound while every sound class is "yes" exactly as often as it is "no" (:func:`av_pairs`).
    """
    m = {c: min(n, per_class or n) for c, n in available.items()}
    top = max(m, key=m.get)
    m[top] = min(m[top], sum(m.values()) - m[top])
    return m


def av_pairs(images: dict[str, list[str]], esc: list[dict], split: str, kept: list[str],
             per_class: int | None = None, seed: int = 0) -> list[dict]:
    """Matched and mismatched (image, sound) pairs: each image once with its class, once with another.

    Image slots are listed class by class and the mismatched sound classes are the same list
    rotated by the largest class's size: no image meets its own class, and every sound class is
    the mismatch exactly as often as it is the match. Clips come from this split's folds
    (:data:`ESC_FOLDS`), drawn by a seeded generator.
    """
    if len(kept) < 2:
        raise ValueError(f"the audio-visual task needs at least 2 sound classes with images, got {kept}")
    by_class = av_images(images)
    sizes = av_sizes({c: len(by_class.get(c, [])) for c in kept}, per_class)
    clips = {c: [r for r in esc if r["category"] == c and esc_split(r["fold"]) == split] for c in kept}
    rng = random.Random(f"{seed}|{split}|av")
    slots = []
    for c in kept:
        names = list(by_class[c])
        rng.shuffle(names)
        slots += [(c, name) for name in names[:sizes[c]]]
    shift = max(sizes.values())
    out = []
    for i, (c, name) in enumerate(slots):
        other = slots[(i + shift) % len(slots)][0]
        for answer, sound in (("yes", c), ("no", other)):
            out.append(_ex("av", "av", AV, answer, split, name, _esc_ref(rng.choice(clips[sound])),
                           image_class=c, sound_class=sound))
    return out


def spoken_questions(yesno_examples: list[dict], split: str) -> list[dict]:
    """The yes/no examples with the question *spoken* (text without "Answer yes or no."), one variant each."""
    variants = SPOKEN_VARIANTS[split]
    out = []
    for i, ex in enumerate(yesno_examples):
        text = ex["prompt"].replace("<image>", "").replace(" Answer yes or no.", "")
        audio = {"source": "spoken", "text": text, "variant": variants[i % len(variants)]}
        out.append(_ex("spoken", ex["template"], SPOKEN, ex["answer"], split, ex["image"], audio,
                       object=ex["object"], typed=ex["id"]))
    return out


# ---------------------------------------------------------------- the whole set, cached

def sources_of(split_images: dict[str, dict[str, list[str]]] | None = None, esc: list[dict] | None = None,
               fsdd: list[dict] | None = None) -> tuple[dict, list[dict], list[dict]]:
    """The label metadata everything is built from: Flickr8k captions per split, ESC-10 and FSDD records.

    Reads no image or audio. Refuses a synthetic stand-in: instruction data is built from real data only.
    """
    from mmcourse import data

    def real(name: str, split: str, **kw):
        recs = data.load(name, split, **kw)
        if recs.info.source != "real":
            raise DataError(f"instruction data needs the real {name} (found: {recs.info.source})\n"
                            f"  fix: set MMCOURSE_DATA_DIR to the folder that holds {name}/ "
                            f"(or run `python -m mmcourse fetch data {name}`)")
        return recs.records

    if split_images is None:
        split_images = {s: {r["image_id"]: r["captions"] for r in real("flickr8k", s, image_size=None)}
                        for s in SPLITS}
    esc = esc if esc is not None else real("esc10", "all")
    fsdd = fsdd if fsdd is not None else real("fsdd", "all")
    return split_images, esc, fsdd


def build(split_images: dict[str, dict[str, list[str]]], esc: list[dict], fsdd: list[dict],
          seed: int = 0) -> dict[str, list[dict]]:
    """``{split: [examples]}`` of every task (see the module docstring); deterministic for a seed."""
    kept = av_kept(av_counts(split_images))
    out = {}
    for s in SPLITS:
        imgs = split_images[s]
        yn = yesno(imgs, s, seed=seed)
        out[s] = (describe(imgs, s) + yn + colour(imgs, s, seed) + digits(fsdd, s) + sounds(esc, s)
                  + av_pairs(imgs, esc, s, kept, seed=seed) + spoken_questions(yn, s))
    return out


def _key(split_images, esc, fsdd, seed) -> str:
    doc = {"version": VERSION, "seed": seed, "images": split_images,
           "esc": sorted((Path(str(r["path"])).stem, r["fold"], r["label"], r["category"]) for r in esc),
           "fsdd": sorted((Path(str(r["path"])).stem, r["speaker"], r["label"]) for r in fsdd)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode("utf-8")).hexdigest()


def folder(key: str) -> Path:
    return config.cache_dir() / NAME / f"v{VERSION}-{key[:12]}"


def examples(split: str = "train", *, tasks: tuple[str, ...] | None = None, seed: int = 0,
             sources: tuple | None = None) -> list[dict]:
    """The examples of ``split`` (all tasks, or ``tasks``), built once and cached with a manifest.

    A cached split whose sha256 does not match the manifest is built again, with a warning.
    ``sources``: ``(split_images, esc, fsdd)`` as from :func:`sources_of` (the default reads them).
    """
    if split not in SPLITS:
        raise ValueError(f"instruct split must be one of {SPLITS}, not {split!r}")
    unknown = sorted(set(tasks or ()) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown instruction task(s) {unknown}; tasks are {', '.join(TASKS)}")
    split_images, esc, fsdd = sources or sources_of()
    key = _key(split_images, esc, fsdd, seed)
    where = folder(key)
    rows = _read_cached(where, split)
    if rows is None:
        built = build(split_images, esc, fsdd, seed)
        _write(where, key, built)
        rows = built[split]
    return [r for r in rows if tasks is None or r["task"] in tasks]


def _read_cached(where: Path, split: str) -> list[dict] | None:
    manifest, path = where / "manifest.json", where / f"{split}.json"
    if not manifest.is_file() or not path.is_file():
        return None
    try:
        expected = json.loads(manifest.read_text(encoding="utf-8"))["splits"][split]["sha256"]
    except (OSError, ValueError, KeyError) as exc:
        warnings.warn(f"{manifest}: unreadable ({exc}); building the instruction data again", DataWarning, stacklevel=3)
        return None
    if sha256_file(path) != expected:
        warnings.warn(f"{path} does not match its sha256 in {manifest}; building the instruction data again",
                      DataWarning, stacklevel=3)
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _write(where: Path, key: str, built: dict[str, list[dict]]) -> None:
    where.mkdir(parents=True, exist_ok=True)
    splits = {}
    for s, rows in built.items():
        path = where / f"{s}.json"
        write_text_atomic(path, json.dumps(rows) + "\n")
        splits[s] = {"file": path.name, "sha256": sha256_file(path), "examples": len(rows),
                     "answers": counts(rows)}
    doc = {"about": "instruction data of notebook 11, built by mmcourse.data.instruct from Flickr8k captions, "
                    "ESC-10 and FSDD labels", "version": VERSION, "key": key, "splits": splits}
    write_text_atomic(where / "manifest.json", json.dumps(doc, indent=1) + "\n")


def counts(rows: list[dict]) -> dict[str, dict[str, int]]:
    """``{task: {answer: n}}`` (descriptions counted as one answer, "<caption>")."""
    out: dict[str, Counter] = {}
    for r in rows:
        out.setdefault(r["task"], Counter())["<caption>" if r["task"] == "describe" else r["answer"]] += 1
    return {t: dict(c.most_common()) for t, c in out.items()}
