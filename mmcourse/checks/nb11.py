"""Checks for notebook 11 (the capstone multimodal LLM): merging image and audio tokens into one prompt
(exercise 11.1), the modality-dropout training example (11.2), the multimodal gain and the leakage of a
benchmark (11.3), the quizzes.

Each check compares the learner's function with the library version (:func:`mmcourse.mllm.merge`,
:func:`mmcourse.mllm.drop_modalities` with :func:`mmcourse.mllm.without`) or, for the random dropout,
with the properties and frequencies the library's rule has, and recognises the typical mistakes to give a
specific hint. The cases are built so that every typical mistake changes the answer
(tests/test_checks_nb11.py keeps them so):

- merge: first a batch where every example has an image and a clip of the same length, placeholders in
  mid-row and in another order in each row (swapped modalities, clips or tokens in the wrong order, one
  modality left out and ``embeds`` returned as they were all change values; ``embeds`` is compared after
  the call, so an in-place write shows); then example 0 with audio only, 1 with both, 2 with an image only
  and clips of 3 and 5 tokens, so features picked by batch index instead of by the k-th example that has
  the modality run out of rows (an IndexError) and stacking clips of different lengths fails;
- dropout: draws from a seeded generator, but nothing depends on the learner consuming random numbers as
  the library does: p = 0 keeps everything exactly, an example with one modality keeps it at p = 1,
  an image + audio example keeps exactly one modality at p = 1, each about half of 2,000 draws (keeping
  always the same one shows), and at p = 0.5 it keeps both in 1/4 of 2,000 draws and drops each one in
  3/8 (one draw shared by both modalities gives 1/2, 1/4, 1/4). Every draw's output is checked: marker
  and features removed together, the features unchanged (zeroed ones show), the answer unchanged, the
  caller's example left as it was. The tolerance (±0.05) is over 4 standard deviations: a right
  solution with its own random numbers (Python's ``random``, the global torch generator) passes too;
- gain: three tasks, one with the blind model below the base LLM (an unclipped leakage shows), one with
  the model below its blind self (a clipped or flipped gain shows), all accuracies as fractions well
  apart (percentages, the base LLM instead of the blind model, and leakage from the model all show).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from mmcourse import checks, mllm


_IMG, _AUD = mllm.PLACEHOLDER["image"], mllm.PLACEHOLDER["audio"]


# --------------------------------------------------------------------------- exercise 11.1: merge_two

def reference_merge_two(embeds: torch.Tensor, input_ids: torch.Tensor, image: torch.Tensor,
                        audio: Sequence[torch.Tensor]) -> torch.Tensor:
    """Image tokens at the -200 positions, audio tokens at the -300 ones, in a new tensor (notebook 11, §The model).

    ``image`` (n_img, N_img, d) and ``audio`` (a list of (N_i, d)) hold one entry per example that HAS that
    modality, in batch order: :func:`mmcourse.mllm.merge`.
    """
    return mllm.merge(embeds, input_ids, {"image": image, "audio": list(audio)})


#: (rows of input_ids, what the case shows), checked in this order; the features follow from the
#: placeholders: the image's tokens per example (the same in every row) and one clip per row with audio
MERGE_CASES: list[tuple[list[list[int]], str]] = [
    ([[5, 8, _IMG, _IMG, 9, _AUD, _AUD, 7, 2],
      [5, _AUD, _AUD, 6, _IMG, _IMG, 3, 2, 0]],
     " (2 examples, each with an image and a clip of 2 tokens)"),
    ([[5, 4, _AUD, _AUD, _AUD, 9, 2, 0, 0, 0, 0, 0],
      [5, _IMG, _IMG, 6, _AUD, _AUD, _AUD, _AUD, _AUD, 3, 2, 0],
      [5, 7, 8, _IMG, _IMG, 9, 3, 2, 0, 0, 0, 0]],
     " (example 0 with audio only, 1 with both, 2 with an image only; clips of 3 and 5 tokens)"),
]

MERGE_D = 3  # the LM's embedding size in the check's cases


def merge_inputs(case: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """``(embeds, input_ids, image, audio)`` of :data:`MERGE_CASES` ``[case]``: random embeddings and features
    (a fixed generator: the global random state is left alone)."""
    rows, _ = MERGE_CASES[case]
    ids = torch.tensor(rows, dtype=torch.long)
    g = torch.Generator().manual_seed(110 + case)
    embeds = torch.randn(*ids.shape, MERGE_D, generator=g)
    n_img = [int(n) for n in (ids == _IMG).sum(dim=1) if n > 0]
    image = torch.randn(len(n_img), n_img[0], MERGE_D, generator=g)
    audio = [torch.randn(int(n), MERGE_D, generator=g) for n in (ids == _AUD).sum(dim=1) if n > 0]
    return embeds, ids, image, audio


def _scatter(embeds: torch.Tensor, ids: torch.Tensor, flat: dict[int, torch.Tensor]) -> torch.Tensor | None:
    """``embeds`` with the rows of ``flat[pid]`` written, in order, at the positions of ``pid``; None when
    there are fewer rows than positions (that mistake would raise)."""
    out = embeds.clone()
    for pid, rows in flat.items():
        where = ids == pid
        n = int(where.sum())
        if rows.shape[0] < n:
            return None
        out[where] = rows[:n]
    return out


def _merge_variant(embeds: torch.Tensor, ids: torch.Tensor, image: torch.Tensor, audio: list[torch.Tensor],
                   how: str) -> torch.Tensor | None:
    """What a typical merging mistake (``how``) returns; None when that mistake raises on this case."""
    img, aud = image.reshape(-1, image.shape[-1]), torch.cat(audio)
    if how == "swapped":
        return _scatter(embeds, ids, {_IMG: aud, _AUD: img})
    if how == "only image":
        return _scatter(embeds, ids, {_IMG: img})
    if how == "only audio":
        return _scatter(embeds, ids, {_AUD: aud})
    if how == "unchanged":
        return embeds.clone()
    if how == "clips reversed":
        return _scatter(embeds, ids, {_IMG: img, _AUD: torch.cat(audio[::-1])})
    if how == "all audio reversed":
        return _scatter(embeds, ids, {_IMG: img, _AUD: aud.flip(0)})
    if how == "clip tokens reversed":
        return _scatter(embeds, ids, {_IMG: img, _AUD: torch.cat([a.flip(0) for a in audio])})
    if how == "images reversed":
        return _scatter(embeds, ids, {_IMG: image.flip(0).reshape(-1, image.shape[-1]), _AUD: aud})
    raise ValueError(f"unknown merging variant {how!r}")


_BY_PRESENT = ("image[k] and audio[k] belong to the k-th example that HAS that modality, in batch order, not to "
               "example k")
_ORDER = "Order: " + _BY_PRESENT + "; within an example, token j goes to its j-th placeholder"

#: (variant of :func:`_merge_variant`, hint) for answers of the right shape
MERGE_MISTAKES: list[tuple[str, str]] = [
    ("unchanged", "you returned embeds as they were: write the image tokens at the positions where input_ids == "
                  "mllm.PLACEHOLDER['image'] (-200) and the audio tokens where it is mllm.PLACEHOLDER['audio'] "
                  "(-300), in a copy (out = embeds.clone()), and return the copy"),
    ("swapped", "image and audio are swapped: the image tokens go where input_ids == -200 "
                "(mllm.PLACEHOLDER['image']), the audio tokens where it is -300 (mllm.PLACEHOLDER['audio'])"),
    ("only image", "only the image was written: the -300 positions still hold the placeholders' embeddings. Write "
                   "the audio clips there too (torch.cat(audio) gives their tokens in order)"),
    ("only audio", "only the audio was written: the -200 positions still hold the placeholders' embeddings. Write "
                   "the image tokens there too (image.reshape(-1, d) gives them in order)"),
    ("clips reversed", "the clips are in reverse order: audio[0] belongs to the FIRST example with audio. "
                       "torch.cat(audio) in the order given. " + _ORDER),
    ("all audio reversed", "the audio tokens are reversed. " + _ORDER),
    ("clip tokens reversed", "each clip's tokens are reversed. " + _ORDER),
    ("images reversed", "the images are in reverse order: image[0] belongs to the FIRST example with an image. "
                        + _ORDER),
]

_MERGE_SHAPES = ("embeds (B, L, d) -> (B, L, d). image (n_img, N_img, d) and audio (a list of (N_i, d) clips: their "
                 "lengths differ, so torch.cat(audio), not torch.stack) hold one entry per example that has the "
                 "modality, in batch order; an example's -200 positions take its image's N_img tokens, its -300 "
                 "positions its clip's N_i tokens")


class _IndexFailure:
    """The IndexError a learner's merge raised (reported with its own hint)."""

    def __init__(self, error: IndexError):
        self.error = error


def _guarded(fn: Callable, gaps: bool) -> Callable:
    """``fn`` returning an :class:`_IndexFailure` for an IndexError when some example lacks a modality (``gaps``):
    there, features looked up by batch index run out of rows."""
    def call(*args: Any) -> Any:
        try:
            return fn(*args)
        except IndexError as error:
            if not gaps:
                raise
            return _IndexFailure(error)
    return call


def check_merge_two(fn: Callable) -> None:
    """Check ``merge_two(embeds, input_ids, image, audio) -> (B, L, d)`` (notebook 11, §The model) against
    :func:`mmcourse.mllm.merge` on :data:`MERGE_CASES`."""
    name = "merge_two"
    for case, (_, what) in enumerate(MERGE_CASES):
        embeds, ids, image, audio = merge_inputs(case)
        given = embeds.clone()
        gaps = bool(((ids == _IMG).sum(dim=1) == 0).any() or ((ids == _AUD).sum(dim=1) == 0).any())
        found = checks.attempt(name + what, _guarded(fn, gaps), given, ids.clone(), image.clone(),
                               [a.clone() for a in audio], fallback="mmcourse.mllm.merge", shape_hint=_MERGE_SHAPES)
        if checks.is_pending(found):
            return
        if isinstance(found, _IndexFailure):
            msg = str(found.error).splitlines()[0] if str(found.error) else ""
            checks.failed(name + what, "a result", f"IndexError: {msg}",
                          "features picked by batch index: " + _BY_PRESENT + ". Example 0 has no image here, so "
                          "the image of example b is image[b - 1]; count the examples with the modality as you go "
                          "(k = 0, 1, …), or write all tokens at once: out[input_ids == -200] = image.reshape(-1, d)")
            return
        if not torch.equal(given, embeds):
            checks.failed(name + what, "embeds left as they were", "embeds changed by the call",
                          "you wrote into embeds in place: make a copy first (out = embeds.clone()) and write into "
                          "the copy. Writing in place changes the caller's tensor and, in training, breaks autograd "
                          "(the embedding lookup's output is needed for its backward pass)")
            return
        want = reference_merge_two(embeds, ids, image, audio)
        if found is not None and _same(found, want):
            continue
        mistakes = [(v, hint) for how, hint in MERGE_MISTAKES
                    if (v := _merge_variant(embeds, ids, image, audio, how)) is not None]
        checks.close(name + what, found, want, mistakes=mistakes, hint=_MERGE_SHAPES)
        return
    checks.passed(name, f"{len(MERGE_CASES)} cases: placeholders mid-row; examples with audio only, both and an "
                        "image only; clips of different lengths; embeds left unchanged")


def _numpy(x: Any) -> np.ndarray | None:
    try:
        return np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    except (TypeError, ValueError):
        return None


def _same(found: Any, want: torch.Tensor) -> bool:
    """Same shape and values (to 1e-6) as the reference, whatever the array type."""
    got = _numpy(found)
    return got is not None and got.shape == tuple(want.shape) and \
        bool(np.allclose(got, want.double().numpy(), atol=1e-6, rtol=1e-5))


# --------------------------------------------------------------------------- exercise 11.2: dropout_example

def reference_dropout_example(ex: dict[str, Any], p: float, generator: torch.Generator | None = None) -> dict[str, Any]:
    """A training example with modality dropout (notebook 11, §Modality dropout).

    Each modality is dropped with probability ``p``, independently, never all of them
    (:func:`mmcourse.mllm.drop_modalities`); a dropped modality loses its marker
    (:func:`mmcourse.mllm.without`) and its features, exactly as a test example without it arrives.
    A new dict: ``ex`` is left as it was.
    """
    return mllm.drop_example(ex, p, generator)


def dropout_examples() -> dict[str, dict[str, Any]]:
    """The examples the check draws from: ``"both"`` (image + audio), ``"image"``, ``"audio"``; features
    without any zero (so zeroed ones show), made with a fixed generator."""
    g = torch.Generator().manual_seed(112)
    image, audio = torch.rand(16, 4, generator=g) + 0.5, -torch.rand(6, 4, generator=g) - 0.5
    return {
        "both": {"prompt": "Look at <image> and listen to <audio>. Could this sound come from this scene?",
                 "answer": "yes", "features": {"image": image, "audio": audio}},
        "image": {"prompt": "<image>Is there a dog in the picture? Answer yes or no.", "answer": "no",
                  "features": {"image": image.flip(0)}},
        "audio": {"prompt": "<audio>What sound is this?", "answer": "rooster", "features": {"audio": audio.flip(0)}},
    }


P0_DRAWS, P1_SINGLE_DRAWS, FREQ_DRAWS, FREQ_TOL = 20, 20, 2000, 0.05


def dropout_frequencies(p: float) -> dict[str, float]:
    """How often an image + audio example keeps both, drops only the image, drops only the audio, at ``p``."""
    one = p * (1 - p) + p * p / 2  # this coin alone, or both coins and this one drawn to go
    return {"keep both": (1 - p) ** 2, "drop image only": one, "drop audio only": one}


class _Stop(Exception):
    """A ✗ or pending verdict was printed: the check stops."""


def _copy(ex: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": ex["prompt"], "answer": ex["answer"],
            "features": {m: f.clone() for m, f in ex["features"].items()}}


def _as_before(given: Any, ex: dict[str, Any]) -> bool:
    """True when the learner's copy of ``ex`` still equals it (nothing mutated)."""
    return (isinstance(given, dict) and set(given) == set(ex) and given["prompt"] == ex["prompt"]
            and given["answer"] == ex["answer"] and isinstance(given["features"], dict)
            and set(given["features"]) == set(ex["features"])
            and all(isinstance(given["features"][m], torch.Tensor) and torch.equal(given["features"][m], f)
                    for m, f in ex["features"].items()))


def _words(text: str) -> str:
    return " ".join(text.split())


_NEVER_ALL = ("never drop all modalities: when every one came up, keep one of them, drawn uniformly at random "
              "(an example with only an image keeps its image whatever p is); an example with no input left "
              "teaches the model to answer from the prompt alone")


def _one_draw(name: str, fn: Callable, ex: dict[str, Any], p: float, generator: torch.Generator,
              what: str) -> frozenset[str]:
    """The modalities the learner's ``dropout_example`` keeps in one draw; print ✗ and raise :class:`_Stop`
    when the output is not a valid dropout of ``ex``."""
    where = f"{name} (p = {p:g}, {what})"
    given = _copy(ex)
    out = checks.attempt(where, fn, given, p, generator, fallback="mmcourse.mllm.drop_example")
    if checks.is_pending(out):
        raise _Stop
    if not _as_before(given, ex):
        checks.failed(where, "the example you were given left as it was", "it was changed",
                      "you changed the caller's example (ex['features'].pop(m), del ex['features'][m] or "
                      "ex['prompt'] = ...): the dataset loses that modality for every later epoch. Build a new dict, "
                      "with a new features dict: {**ex, 'prompt': ..., 'features': {m: f for m, f in "
                      "ex['features'].items() if m not in dropped}}")
        raise _Stop
    if not isinstance(out, dict) or not {"prompt", "answer", "features"} <= set(out) \
            or not isinstance(out["features"], dict) or not isinstance(out["prompt"], str):
        checks.failed(where, "a dict with 'prompt' (a string), 'answer' and 'features' (a dict)",
                      f"{type(out).__name__} {out!r:.60}",
                      "return the example: {'prompt': new_prompt, 'answer': ex['answer'], 'features': new_features}")
        raise _Stop
    if out["answer"] != ex["answer"]:
        checks.failed(where, f"the answer {ex['answer']!r}", repr(out["answer"]),
                      "leave the answer as it is: dropout removes inputs, never the target")
        raise _Stop
    feats, present = out["features"], ex["features"]
    unknown = sorted(set(feats) - set(present))
    if unknown:
        checks.failed(where, f"features of {sorted(present)} only", f"features of {sorted(feats)}",
                      "keep a subset of the example's own modalities: dropout adds none")
        raise _Stop
    for m, f in feats.items():
        arr = _numpy(f) if f is not None else None
        if arr is not None and arr.shape == tuple(present[m].shape) and arr.size and not arr.any():
            checks.failed(where, f"{m} removed or kept as it was", f"the {m} features zeroed",
                          "remove a dropped modality (its marker from the prompt and its entry from features), do "
                          "not zero it: zeroed features are notebook 05's modality dropout, and this model would "
                          "still get the placeholders and a constant input through the projector. A test example "
                          "without that modality arrives with neither marker nor features")
            raise _Stop
        if arr is None or arr.shape != tuple(present[m].shape) or not np.array_equal(arr, present[m].double().numpy()):
            checks.failed(where, f"the {m} features as they were", f"{type(f).__name__} {f!r:.40}",
                          f"a kept modality keeps its features unchanged; a dropped one is removed from the dict "
                          f"(del features[{m!r}]), not set to None or changed")
            raise _Stop
    kept = frozenset(feats)
    if not kept:
        checks.failed(where, "at least one modality kept", "every modality dropped", _NEVER_ALL)
        raise _Stop
    prompt = out["prompt"]
    markers = {m for m in present if mllm.MARKER[m] in prompt}
    if markers - kept:
        m = sorted(markers - kept)[0]
        checks.failed(where, f"the marker {mllm.MARKER[m]} removed with the {m} features",
                      f"{prompt!r} without {m} features",
                      "drop the marker and the features together (mllm.without(prompt, dropped)): a marker with no "
                      "features makes placeholders that mllm.merge has nothing to write into (it raises)")
        raise _Stop
    if kept - markers:
        m = sorted(kept - markers)[0]
        checks.failed(where, f"the marker {mllm.MARKER[m]} kept with the {m} features", repr(prompt),
                      "drop the marker and the features together: the features of a modality whose marker is "
                      "gone have no placeholders to go to. Remove the marker only of a DROPPED modality")
        raise _Stop
    want = mllm.without(ex["prompt"], sorted(set(present) - kept))
    if _words(prompt) != _words(want):
        checks.failed(where, repr(want), repr(prompt),
                      "remove only the markers of the dropped modalities (prompt.replace('<audio>', ''), or "
                      "mllm.without); the rest of the prompt stays as it is")
        raise _Stop
    return kept


def _ex_mods(ex: dict[str, Any]) -> list[str]:
    return sorted(ex["features"])


def check_dropout_example(fn: Callable) -> None:
    """Check ``dropout_example(ex, p, generator) -> dict`` (notebook 11, §Modality dropout): the properties and
    frequencies of :func:`reference_dropout_example` on :func:`dropout_examples`, draw by draw."""
    name = "dropout_example"
    exs = dropout_examples()
    g = torch.Generator().manual_seed(11)
    try:
        for key in ("both", "image", "audio"):
            for _ in range(P0_DRAWS):
                kept = _one_draw(name, fn, exs[key], 0.0, g, f"the {key} example")
                if kept != set(_ex_mods(exs[key])):
                    checks.failed(f"{name} (p = 0, the {key} example)", f"every modality kept ({_ex_mods(exs[key])})",
                                  f"{sorted(set(_ex_mods(exs[key])) - kept)} dropped",
                                  "with p = 0 nothing is dropped: drop each modality when its own draw "
                                  "torch.rand((), generator=generator) < p, i.e. with probability p. Dropping one "
                                  "whatever p is, or comparing with > p, drops modalities at p = 0")
                    return
        for key in ("image", "audio"):
            for _ in range(P1_SINGLE_DRAWS):
                _one_draw(name, fn, exs[key], 1.0, g, f"the {key} example")  # never-all: nothing can be dropped
        _check_p1_both(name, fn, exs["both"], g)
        _check_frequencies(name, fn, exs["both"], g, 0.5)
    except _Stop:
        return
    checks.passed(name, "marker and features dropped together, never all, the example left as it was, "
                        "p = 0 keeps all, one of two kept uniformly at p = 1, frequencies right at p = 0.5")


def _check_p1_both(name: str, fn: Callable, ex: dict[str, Any], g: torch.Generator) -> None:
    """At p = 1 an image + audio example keeps exactly one modality, each about half the time."""
    where = f"{name} (p = 1, the both example)"
    counts: Counter[str] = Counter()
    for _ in range(FREQ_DRAWS):
        kept = _one_draw(name, fn, ex, 1.0, g, "the both example")
        if len(kept) != 1:
            checks.failed(where, "exactly one of image and audio kept", f"{sorted(kept)} kept",
                          "with p = 1 every modality's draw says drop, so all would go; never-all then keeps ONE of "
                          "them, drawn uniformly. Keeping both means p was ignored, or the all-dropped case "
                          "restored every modality instead of one")
            raise _Stop
        counts[next(iter(kept))] += 1
    share = counts["image"] / FREQ_DRAWS
    if abs(share - 0.5) > FREQ_TOL:
        m = "image" if share > 0.5 else "audio"
        checks.failed(where, f"the image kept in 0.5 ± {FREQ_TOL:g} of {FREQ_DRAWS} draws",
                      f"{share:.3f} (the {m} in {max(share, 1 - share):.3f})",
                      "when every modality came up, keep one drawn uniformly at random (torch.randint(len(present), "
                      "(1,), generator=generator)), not always the same one: a model that always keeps the "
                      f"{m} never learns to answer from the other modality alone")
        raise _Stop


def _check_frequencies(name: str, fn: Callable, ex: dict[str, Any], g: torch.Generator, p: float) -> None:
    """At ``p`` an image + audio example's outcomes have :func:`dropout_frequencies`."""
    counts: Counter[str] = Counter()
    for _ in range(FREQ_DRAWS):
        kept = _one_draw(name, fn, ex, p, g, "the both example")
        counts["keep both" if len(kept) == 2 else "drop image only" if "audio" in kept else "drop audio only"] += 1
    found = {k: counts[k] / FREQ_DRAWS for k in dropout_frequencies(p)}
    want = dropout_frequencies(p)
    if all(abs(found[k] - want[k]) <= FREQ_TOL for k in want):
        return
    show = ", ".join(f"{k} {v:.3f}" for k, v in found.items())
    expect = ", ".join(f"{k} {v:.3f}" for k, v in want.items()) + f" (± {FREQ_TOL:g} over {FREQ_DRAWS} draws)"
    where = f"{name} (p = {p:g}, the both example)"
    shared = {"keep both": 1 - p, "drop image only": p / 2, "drop audio only": p / 2}
    own_coin = ("give each modality its own draw: torch.rand(len(present), generator=generator) < p, one coin per "
                "modality. ")
    if found["drop image only"] + found["drop audio only"] == 0:
        hint = own_coin + ("Exactly one modality was never dropped: one draw shared by both drops them together "
                           "or not at all, so the model never sees an example with the image alone or the audio alone")
    elif all(abs(found[k] - shared[k]) <= FREQ_TOL for k in want):
        hint = own_coin + ("One draw for the whole example (dropping both, then keeping one, or dropping one "
                           f"drawn modality) keeps both in 1 - p = {1 - p:g} of the draws, not (1 - p)² = "
                           f"{(1 - p) ** 2:g}")
    else:
        hint = (f"each modality is dropped with probability p, independently: both kept (1 - p)² = {(1 - p) ** 2:g}; "
                f"only the image dropped p(1 - p) + p²/2 = {want['drop image only']:g} (its coin alone, or both "
                "coins and the image drawn to go)")
    checks.failed(where, expect, show, hint)
    raise _Stop


# --------------------------------------------------------------------------- exercise 11.3: multimodal_gain

def reference_multimodal_gain(scores: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per task, MMStar's multimodal gain and leakage (Chen et al. 2024; notebook 11, §Evaluation).

    ``gain = model - blind``: what the non-text inputs add to the trained model (negative when they hurt).
    ``leakage = max(0, blind - base)``: what the trained model answers without those inputs beyond what the
    untrained base LLM does, i.e. what training taught it about the benchmark's text (0 when it knows less).
    """
    return {task: {"gain": s["model"] - s["blind"], "leakage": max(0.0, s["blind"] - s["base"])}
            for task, s in scores.items()}


#: accuracies (fractions) per task: the blind model below the base LLM on "sound", the model below its
#: blind self on "audio-visual"
GAIN_SCORES: dict[str, dict[str, float]] = {
    "yes/no (image)": {"model": 0.82, "blind": 0.61, "base": 0.50},
    "sound (audio)": {"model": 0.64, "blind": 0.12, "base": 0.20},
    "audio-visual (image + audio)": {"model": 0.47, "blind": 0.52, "base": 0.49},
}


def _gain_variant(s: dict[str, float], how: str) -> float:
    """The gain a typical mistake (``how``) computes from one task's scores."""
    model, blind, base = s["model"], s["blind"], s["base"]
    return {"flipped": blind - model, "clipped": max(0.0, model - blind), "base": model - base}[how]


def _leakage_variant(s: dict[str, float], how: str) -> float:
    """The leakage a typical mistake (``how``) computes from one task's scores."""
    model, blind, base = s["model"], s["blind"], s["base"]
    return {"unclipped": blind - base, "model": max(0.0, model - base), "model unclipped": model - base,
            "flipped": max(0.0, base - blind)}[how]


#: (quantity, variant, hint), tried in this order
GAIN_MISTAKES: list[tuple[str, str, str]] = [
    ("gain", "flipped", "the gain's sign is flipped: gain = model - blind, what the inputs ADD (positive when the "
                        "model does better with them)"),
    ("gain", "clipped", "do not clip the gain at 0: a negative gain (the model does worse WITH its inputs, here "
                        "on the audio-visual task) is a finding to report, not to hide"),
    ("gain", "base", "the gain compares the trained model with and without its inputs: model - blind. The base LLM "
                     "is another model; model - base mixes what the inputs add with what training on the "
                     "benchmark's text taught"),
    ("leakage", "unclipped", "clip the leakage at 0: max(0, blind - base). A blind model worse than the base LLM "
                             "(here on the sound task) leaked nothing; a negative leakage would inflate a "
                             "leakage-corrected gain"),
    ("leakage", "model", "the leakage is about the BLIND model: max(0, blind - base), what the trained model "
                         "answers without its inputs beyond the base LLM. model - base counts what the inputs add"),
    ("leakage", "model unclipped", "the leakage is about the BLIND model: max(0, blind - base), what the trained "
                                   "model answers without its inputs beyond the base LLM"),
    ("leakage", "flipped", "the leakage's sign is flipped: max(0, blind - base), what the trained model gets "
                           "right without its inputs BEYOND the base LLM"),
]


def check_multimodal_gain(fn: Callable) -> None:
    """Check ``multimodal_gain(scores) -> {task: {"gain", "leakage"}}`` (notebook 11, §Evaluation) against
    :func:`reference_multimodal_gain` on :data:`GAIN_SCORES`."""
    name = "multimodal_gain"
    scores = {t: dict(s) for t, s in GAIN_SCORES.items()}
    found = checks.attempt(name, fn, scores, fallback="checks.nb11.reference_multimodal_gain")
    if checks.is_pending(found):
        return
    if scores != GAIN_SCORES:
        checks.failed(name, "scores left as they were", "they were changed",
                      "build a new dict for the result: {task: {'gain': ..., 'leakage': ...} for task, s in "
                      "scores.items()}; writing into scores changes the caller's table")
        return
    want = reference_multimodal_gain(GAIN_SCORES)
    got = _gain_values(found, list(GAIN_SCORES))
    if got is None:
        checks.failed(name, f"{{task: {{'gain': number, 'leakage': number}}}} for the tasks {list(GAIN_SCORES)}",
                      f"{type(found).__name__} {found!r:.80}",
                      "return a dict with one entry per task of scores, each a dict {'gain': ..., 'leakage': ...}")
        return
    wrong = [(t, q) for t in want for q in ("gain", "leakage") if not math.isclose(got[t][q], want[t][q], abs_tol=1e-6)]
    if not wrong:
        checks.passed(name, f"{len(want)} tasks: a negative gain, a leakage clipped at 0, accuracies as fractions")
        return
    task, q = wrong[0]
    expected, given = f"{q} {want[task][q]:.4g} for {task!r}", f"{got[task][q]:.4g}"
    values = [(got[t][k], want[t][k]) for t in want for k in ("gain", "leakage")]
    if all(math.isclose(g, 100 * w, abs_tol=1e-4) for g, w in values):
        checks.failed(name, expected, given, "accuracies are fractions in [0, 1] and so are gain and leakage: do "
                                             "not multiply by 100 (format them as percentages when you print)")
        return
    for quantity, how, hint in GAIN_MISTAKES:
        variant = _gain_variant if quantity == "gain" else _leakage_variant
        if quantity == q and all(math.isclose(got[t][q], variant(s, how), abs_tol=1e-6)
                                 for t, s in GAIN_SCORES.items()):
            checks.failed(name, expected, given, hint)
            return
    checks.failed(name, expected, given, "gain = model - blind (negative stays negative), leakage = max(0, blind - "
                                         "base), per task")


def _gain_values(found: Any, tasks: list[str]) -> dict[str, dict[str, float]] | None:
    """``found`` as ``{task: {"gain": float, "leakage": float}}``, or None when it is not of that form."""
    if not isinstance(found, dict) or set(found) != set(tasks):
        return None
    out = {}
    for t in tasks:
        entry = found[t]
        if not isinstance(entry, dict) or not {"gain", "leakage"} <= set(entry):
            return None
        try:
            out[t] = {q: float(entry[q]) for q in ("gain", "leakage")}
        except (TypeError, ValueError):
            return None
    return out


# --------------------------------------------------------------------------- quizzes

def check_quiz_11_1(fn: Callable) -> None:
    """Quiz 11.1 (a number).

    Question: "How many LLM input positions do one image and one 5-s ESC-10 clip take together?"
    """
    checks.quiz_with_hints(
        "quiz 11.1 (positions of an image and a clip)", fn, 78,
        "The GridProjector turns MobileNetV2's 7 × 7 grid into 4 × 4 = 16 tokens (its stride-2 block halves each "
        "side, rounding up). Whisper's encoder gives 50 frames per second, 250 for 5 s, and stacking k = 4 "
        "consecutive frames gives 250 // 4 = 62 tokens (the last 2 frames are dropped). Together 16 + 62 = 78 "
        "placeholder positions, plus the prompt's text tokens: the clip costs almost four times the image.",
        0.01,
        [(266.0, "266 = 16 + 250 counts the audio frames before stacking: k = 4 frames make one token."),
         (111.0, "111 = 49 + 62 counts the image's 7 × 7 grid cells: the GridProjector's stride 2 makes 4 × 4 = 16 "
                 "tokens of them."),
         (299.0, "299 = 49 + 250 counts the grid cells and the audio frames before the projectors reduce them."),
         (28.5, "28.5 = 16 + 12.5 counts the audio tokens of ONE second; the clip lasts 5 s."),
         (62.0, "62 is the clip alone: add the image's tokens."),
         (16.0, "16 is the image alone: add the clip's tokens."),
         (66.0, "the 4 × 4 grid makes 16 tokens, not 4.")])


def check_quiz_11_2(fn: Callable) -> None:
    """Quiz 11.2 (a number).

    Question: "The audio–visual correspondence task is balanced: every image is asked once with a matching and
    once with a mismatched sound, and every sound class is 'yes' as often as 'no'. What accuracy can a model that
    sees only the image (or only the sound) reach at best?"
    """
    checks.quiz_with_hints(
        "quiz 11.2 (one input of a balanced pair task)", fn, 0.5,
        "Whether the sound fits the scene depends on both inputs. Each image is asked once with its own class's "
        "sound (\"yes\") and once with another class's (\"no\"), so given the image alone the answer is yes or no "
        "with probability 1/2 whatever the image shows; every sound class is \"yes\" as often as \"no\", so the "
        "same holds for the sound alone. Conditional on either input the answer is a fair coin: 0.5, chance. Only "
        "a model that compares the two can beat it, which is what makes this task a test of using both modalities "
        "(and of the blind and one-input controls: they must stay at 0.5).",
        0.02,
        [(50.0, "As a fraction: 0.5, not 50 (percent)."),
         (1.0, "One input alone cannot tell whether the pair matches: the same image comes with a matching and a "
               "mismatched sound."),
         (0.0, "0 would be as informative as 1 (flip every answer): a single input carries no information here."),
         (0.25, "0.25 is not chance for a yes/no question: there are two answers, each half the time.")])
