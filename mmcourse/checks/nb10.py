"""Checks for notebook 10_audio_language: frame stacking (exercise 10.1), the answer-only label mask (10.2),
the shuffled-audio control (10.3), parsing generated text into a class (10.4), the quizzes.

Each check compares the learner's function with the library version (:func:`mmcourse.mllm.stack_frames`,
:data:`mmcourse.mllm.IGNORE`, :func:`mmcourse.answers.parse_answer`) or, for the control, with the
properties a control must have, and recognises the typical mistakes to give a specific hint. The
cases are built so that every typical mistake changes the answer (tests/test_checks_nb10.py keeps
them so):

- stacking: random features with T % k ≠ 0 first (so dropping, padding and the wrong axis all
  differ), then T a multiple of k, then another k and d (a hard-coded k shows);
- labels: prompts with audio placeholders (-300) whose answer repeats a prompt token (masking by
  value shows) and an eos id of 0 (a falsy id shows);
- control: clips of different lengths, so each output can be traced to the clip it came from,
  over 20 seeds each (a random permutation has no fixed point with probability ≈ 1/e ≈ 0.37, so
  one that ignores fixed points cannot pass 20 seeds by luck);
- parsing: digit words and multi-word sound classes, with texts where a substring, a case, a
  punctuation mark, a second class or an invalid answer each change the result.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from mmcourse import answers, checks, mllm


# --------------------------------------------------------------------------- exercise 10.1: stack_frames

def reference_stack_frames(x: torch.Tensor, k: int) -> torch.Tensor:
    """``(B, T, d) -> (B, T // k, k*d)``: k consecutive frames concatenated (notebook 10, §Length)."""
    return mllm.stack_frames(x, k)


#: (B, T, d, k, what the case shows), checked in this order
STACK_CASES: list[tuple[int, int, int, int, str]] = [
    (2, 10, 3, 4, " (T = 10, k = 4: 2 frames left over)"),
    (2, 12, 3, 4, " (T = 12 = 3 × 4)"),
    (1, 9, 5, 2, " (T = 9, k = 2, d = 5)"),
]


def stack_input(b: int, t: int, d: int) -> torch.Tensor:
    """Random (B, T, d) features of a case (a fixed generator: the global random state is left alone)."""
    return torch.randn(b, t, d, generator=torch.Generator().manual_seed(1000 * b + 10 * t + d))


def _stack_variant(x: torch.Tensor, k: int, how: str) -> torch.Tensor:
    """What a typical stacking mistake (``how``) returns on ``x``."""
    b, t, d = x.shape
    n = t // k
    kept = x[:, :n * k]
    if how == "transposed first":  # (B, d, T) reshaped: features of frames n apart interleaved
        return kept.transpose(1, 2).reshape(b, k * d, n).transpose(1, 2)
    if how == "strided":  # frames t, t+n, t+2n, ... instead of consecutive ones
        return kept.reshape(b, k, n, d).transpose(1, 2).reshape(b, n, k * d)
    if how == "features interleaved":  # consecutive frames, but feature 0 of each, then feature 1, ...
        return kept.reshape(b, n, k, d).transpose(2, 3).reshape(b, n, k * d)
    if how == "first frames dropped":
        return x[:, t - n * k:].reshape(b, n, k * d)
    if how == "mean":
        return kept.reshape(b, n, k, d).mean(dim=2)
    if how == "zero padded":
        m = -(-t // k)
        return torch.cat([x, x.new_zeros(b, m * k - t, d)], dim=1).reshape(b, m, k * d)
    if how == "channels first":
        return mllm.stack_frames(x, k).transpose(1, 2)
    if how == "k = 4":
        return mllm.stack_frames(x, 4)
    raise ValueError(f"unknown stacking variant {how!r}")


_STACK_RULE = ("token t is torch.cat([x[:, t*k], x[:, t*k + 1], …, x[:, t*k + k − 1]], dim=-1): "
               "x[:, :n*k].reshape(B, n, k*d)")
_WRONG_AXIS = "you stacked along the wrong axis: "

#: (variant of :func:`_stack_variant`, hint) for answers of the right shape
STACK_MISTAKES: list[tuple[str, str]] = [
    ("transposed first", _WRONG_AXIS + "transposing to (B, d, T) before the reshape mixes the features of frames "
                                       "T // k apart into one token. Reshape the time axis directly: " + _STACK_RULE),
    ("strided", _WRONG_AXIS + "reshape(B, k, T // k, d) groups frames t, t + T//k, t + 2·T//k, …; a token holds k "
                              "CONSECUTIVE frames t*k … t*k + k − 1: " + _STACK_RULE),
    ("features interleaved", _WRONG_AXIS + "the k frames go one after the other (frame t*k's d features, then frame "
                                           "t*k + 1's, …); you interleaved them feature by feature: " + _STACK_RULE),
    ("first frames dropped", "drop the LAST T % k frames (the clip's end), not the first ones: x[:, :n*k] with "
                             "n = T // k"),
]

#: (variant, hint) recognised by the shape of the answer
STACK_SHAPE_MISTAKES: list[tuple[str, str]] = [
    ("mean", "concatenate the k frames (k*d features per token), do not average them: stacking reduces the number "
             "of tokens without throwing away what happens inside the k frames (Ultravox, SLAM-ASR)"),
    ("zero padded", "keep T // k tokens and drop the last T % k frames, as mllm.stack_frames does; zero padding "
                    "adds a token made partly of silence that no real frame produced"),
    ("channels first", "return (B, T // k, k*d): the tokens on axis 1 and the features last, as the Projector "
                       "(nn.Linear on the last axis) expects"),
    ("k = 4", "use the argument k, not a hard-coded 4"),
]


def check_stack_frames(fn: Callable) -> None:
    """Check ``stack_frames(x, k) -> (B, T // k, k*d)`` (notebook 10, §Length) against
    :func:`mmcourse.mllm.stack_frames` on :data:`STACK_CASES`."""
    name = "stack_frames"
    for b, t, d, k, what in STACK_CASES:
        x = stack_input(b, t, d)
        found = checks.attempt(name + what, fn, x.clone(), k, fallback="mmcourse.mllm.stack_frames",
                               shape_hint=f"(B, T, d) -> (B, T // k, k*d): keep the first (T // k)·k frames, "
                                          f"x[:, :n*k], then reshape; {_STACK_RULE}")
        if checks.is_pending(found):
            return
        want = mllm.stack_frames(x, k)
        if found is not None and _same(found, want):
            continue
        shapes = {}
        for how, hint in STACK_SHAPE_MISTAKES:
            shape = tuple(_stack_variant(x, k, how).shape)
            if shape != tuple(want.shape):
                shapes.setdefault(shape, hint)
        if checks.shape_mistake(name + what, found, want, shapes):
            return
        checks.close(name + what, found, want,
                     mistakes=[(_stack_variant(x, k, how), hint) for how, hint in STACK_MISTAKES],
                     hint="(B, T, d) -> (B, T // k, k*d), where " + _STACK_RULE)
        return
    checks.passed(name, f"{len(STACK_CASES)} cases: a remainder dropped, T a multiple of k, k = 2")


def _same(found: Any, want: torch.Tensor) -> bool:
    """Same shape and values (to 1e-6) as the reference, whatever the array type."""
    try:
        got = np.asarray(found.detach().cpu().numpy() if hasattr(found, "detach") else found, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return got.shape == tuple(want.shape) and bool(np.allclose(got, want.double().numpy(), atol=1e-6, rtol=1e-5))


# --------------------------------------------------------------------------- exercise 10.2: answer-only labels

def reference_answer_only_labels(prompt_ids: Sequence[int], answer_ids: Sequence[int],
                                 eos_id: int) -> tuple[list[int], list[int]]:
    """``input_ids = prompt + answer + [eos]``, ``labels = [-100] * len(prompt) + answer + [eos]``
    (notebook 10, §Tasks).

    The loss covers the answer and the eos (so the model learns to stop), never the prompt:
    chat template, instruction and audio placeholders alike. No shift: the HF model shifts the
    labels by one itself (the logits at position t are scored against labels[t + 1]).
    """
    answer = [int(a) for a in answer_ids] + [int(eos_id)]
    return [int(p) for p in prompt_ids] + answer, [mllm.IGNORE] * len(prompt_ids) + answer


_AUDIO = mllm.PLACEHOLDER["audio"]
#: (prompt_ids, answer_ids, eos_id, what the case shows): chat prompts with audio placeholders whose answers
#: repeat a prompt token (9, then 6: masking by value shows); the second has eos id 0 (a falsy id shows)
LABEL_CASES: list[tuple[list[int], list[int], int, str]] = [
    ([1, 9, 4, _AUDIO, _AUDIO, _AUDIO, 7, 5], [12, 9, 31], 2, ""),
    ([3, 8, _AUDIO, _AUDIO, 6], [44, 6], 0, " (eos_id = 0)"),
]

_SHIFT = ("do not shift the labels: the HF model does it itself (it scores the logits at position t against "
          "labels[t + 1]), so labels[t] = input_ids[t] on the answer and the eos, and both lists have the same "
          "length. Shifting by hand as well makes the model predict the token after the next")
_NO_EOS = ("append eos_id after the answer, in input_ids AND in labels (not -100): the model must learn to stop, "
           "or generation runs on after the answer")
_REVERSED = ("the mask is the wrong way round: -100 goes on the PROMPT (len(prompt_ids) positions) and the ids of "
             "the answer and the eos are the labels")


def label_mistakes(prompt: list[int], answer: list[int], eos: int) -> list[tuple[list[int] | None, list[int], str]]:
    """``(input_ids or None for any, labels, hint)`` that typical mistakes return, in the order they are tried."""
    ignore = mllm.IGNORE
    full = prompt + answer + [eos]
    labels = [ignore] * len(prompt) + answer + [eos]
    return [
        (None, full, "the loss is on the prompt too (labels == input_ids): put -100 on every prompt position, so "
                     "the model is trained to answer, not to reproduce the chat template and the instruction"),
        (None, [ignore if t < 0 else t for t in full],
         "-100 on the WHOLE prompt (chat template and instruction text too), not only on the audio placeholders: "
         "the loss on the prompt's text trains the model to repeat the template"),
        (prompt + answer, [ignore] * len(prompt) + answer, _NO_EOS),
        (full, [ignore] * len(prompt) + answer + [ignore], _NO_EOS),
        (prompt + answer, labels, _NO_EOS),
        (None, labels[1:] + [ignore], _SHIFT),
        (None, labels[1:], _SHIFT),
        (None, [ignore] + labels[:-1], _SHIFT),
        (None, prompt + [ignore] * (len(answer) + 1), _REVERSED),
        (None, prompt + [ignore] * len(answer) + [eos], _REVERSED),
        (None, [ignore if t in prompt else t for t in full],
         f"mask by POSITION, not by value: the first len(prompt_ids) labels are -100 and the rest are the answer "
         f"and eos ids; an answer token can also occur in the prompt (here {sorted(set(answer) & set(prompt))})"),
    ]


def _int_list(x: Any) -> list[int] | None:
    if hasattr(x, "tolist"):
        x = x.tolist()
    if isinstance(x, (list, tuple)) and all(isinstance(v, int) or hasattr(v, "__index__") for v in x):
        return [int(v) for v in x]
    return None


def check_answer_only_labels(fn: Callable) -> None:
    """Check ``answer_only_labels(prompt_ids, answer_ids, eos_id) -> (input_ids, labels)`` (notebook 10,
    §Tasks) against :func:`reference_answer_only_labels` on :data:`LABEL_CASES`."""
    name = "answer_only_labels"
    for prompt, answer, eos, what in LABEL_CASES:
        if not _check_labels_case(name + what, fn, prompt, answer, eos):
            return
    checks.passed(name, "-100 on the prompt, the answer and the eos as labels, no shift")


def _check_labels_case(name: str, fn: Callable, prompt: list[int], answer: list[int], eos: int) -> bool:
    given_prompt, given_answer = list(prompt), list(answer)
    found = checks.attempt(name, fn, given_prompt, given_answer, eos, fallback="mmcourse.mllm.example")
    if checks.is_pending(found):
        return False
    if given_prompt != prompt or given_answer != answer:
        return checks.failed(name, "prompt_ids and answer_ids left unchanged",
                             f"prompt_ids = {given_prompt}, answer_ids = {given_answer} after the call",
                             "`ids = prompt_ids` does not copy a list: ids += answer_ids or ids.append(eos_id) then "
                             "change the caller's prompt too. Build new lists: ids = prompt_ids + answer_ids + "
                             "[eos_id]")
    if not isinstance(found, (tuple, list)) or len(found) != 2:
        return checks.failed(name, "a pair (input_ids, labels)", f"{type(found).__name__} {found!r:.60}",
                             "return both lists: `return input_ids, labels`")
    ids, labels = _int_list(found[0]), _int_list(found[1])
    if ids is None or labels is None:
        return checks.failed(name, "two lists of ints", f"{type(found[0]).__name__}, {type(found[1]).__name__}",
                             "return Python lists of token ids (or 1-D integer tensors)")
    want_ids, want_labels = reference_answer_only_labels(prompt, answer, eos)
    if ids == want_ids and labels == want_labels:
        return True
    for bad_ids, bad_labels, hint in label_mistakes(prompt, answer, eos):
        if (bad_ids is None or ids == bad_ids) and labels == bad_labels:
            return checks.failed(name, f"labels {want_labels}", f"labels {labels}", hint)
    if eos != 2:
        other_ids, other_labels = reference_answer_only_labels(prompt, answer, 2)
        if ids == other_ids and labels == other_labels:
            return checks.failed(name, f"labels {want_labels}", f"labels {labels}",
                                 f"use the eos_id argument ({eos} here), not a hard-coded id")
    if len(ids) != len(labels):
        return checks.failed(name, "input_ids and labels of the same length", f"{len(ids)} and {len(labels)}",
                             "one label per input position: labels[t] is the target at position t (-100 for none)")
    if ids != want_ids:
        return checks.failed(name, f"input_ids {want_ids}", f"input_ids {ids}",
                             "input_ids = prompt_ids + answer_ids + [eos_id], in this order")
    return checks.failed(name, f"labels {want_labels}", f"labels {labels}",
                         "labels = [-100] * len(prompt_ids) + answer_ids + [eos_id]")


# --------------------------------------------------------------------------- exercise 10.3: shuffled control

def reference_shuffled_control(features: Sequence[Any], seed: int) -> list[Any]:
    """Each clip gets the features of ANOTHER clip: a random derangement (notebook 10, §Evaluation, controls).

    :func:`mmcourse.mllm.derangement`: a permutation drawn with ``np.random.default_rng(seed)`` and
    redrawn until no clip keeps its own features (about e ≈ 2.7 draws on average): a clip that kept its own audio would leak the
    true answer into a control meant to have none. Real clips, each used once: the control sees
    features from the right distribution, only not the right ones.
    """
    if len(features) < 2:
        raise ValueError(f"a shuffled control needs at least 2 clips, got {len(features)}")
    return [features[j] for j in mllm.derangement(len(features), seed)]


#: (number of clips, seeds the check runs): N = 2 has a single derangement, the swap
CONTROL_CASES: list[tuple[int, tuple[int, ...]]] = [(5, tuple(range(20))), (9, tuple(range(20, 40))), (2, (0, 1, 2, 3))]


def control_features(n: int) -> list[torch.Tensor]:
    """``n`` clips of (T_i, 4) random features, T_i = 3, 4, … (different lengths, as trimmed Whisper frames)."""
    g = torch.Generator().manual_seed(n)
    return [torch.randn(3 + i, 4, generator=g) for i in range(n)]


def _numpy(x: Any) -> np.ndarray | None:
    try:
        return np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    except (TypeError, ValueError):
        return None


def _sources(out: Any, feats: list[torch.Tensor]) -> list[int | None] | None:
    """For each output clip, the index of the input clip it equals (None for none); None if not a sequence."""
    if isinstance(out, (str, bytes)) or not hasattr(out, "__len__"):
        return None
    originals = [f.double().numpy() for f in feats]
    found = []
    for item in out:
        arr = _numpy(item)
        found.append(next((j for j, o in enumerate(originals)
                           if arr is not None and arr.shape == o.shape and np.array_equal(arr, o)), None))
    return found


_LEAK = ("the control leaks the true audio: a clip that keeps its own features is the real model's input, not a "
         "control. Draw a permutation without fixed points (a derangement): redraw while any perm[i] == i")


def check_shuffled_control(fn: Callable) -> None:
    """Check ``shuffled_control(features, seed) -> features`` (notebook 10, §Evaluation, controls): on
    :data:`CONTROL_CASES`, every clip gets another real clip's features, each clip once, none its own,
    reproducibly for a seed and differently across seeds; the caller's list is left as it was."""
    name = "shuffled_control"
    for n, seeds in CONTROL_CASES:
        feats = control_features(n)
        perms = []
        for seed in seeds:
            given = [f.clone() for f in feats]
            out = checks.attempt(name, fn, given, seed, fallback="checks.nb10.reference_shuffled_control")
            if checks.is_pending(out):
                return
            if len(given) != n or any(not torch.equal(g, f) for g, f in zip(given, feats)):
                checks.failed(name, "the features you were given left as they were", "they were changed",
                              "random.shuffle(features) (or an in-place write) changes the caller's list: the "
                              "real features are lost for the model runs after the control. Build a new list")
                return
            perm = _check_control_once(name, out, feats, seed)
            if perm is None:
                return
            repeat = checks.attempt(name, fn, [f.clone() for f in feats], seed)
            if checks.is_pending(repeat):
                return
            if _sources(repeat, feats) != perm:
                checks.failed(name, "the same result for the same seed", f"another one for seed {seed}",
                              "draw from a generator made from the seed, np.random.default_rng(seed) (or "
                              "torch.Generator().manual_seed(seed)): a control must be reproducible")
                return
            perms.append(tuple(perm))
        if n > 2 and len(set(perms)) == 1:
            checks.failed(name, f"different derangements for the {len(seeds)} seeds", f"{list(perms[0])} every time",
                          "use the seed to draw the permutation: a fixed shift (clip i gets clip i + 1) keeps "
                          "neighbours together, and in a test set sorted by class the neighbour is usually of the "
                          "same class, so the control leaks the label")
            return
    checks.passed(name, "real clips, each once, none its own, reproducible per seed")


def _check_control_once(name: str, out: Any, feats: list[torch.Tensor], seed: int) -> list[int] | None:
    """The source of each output clip if ``out`` is a valid control, else print ✗ and return None."""
    n = len(feats)
    where = f"(N = {n} clips, seed {seed})"
    source = _sources(out, feats)
    if source is None or len(source) != n:
        size = f"{len(out)} items" if source is not None else f"{type(out).__name__}"
        checks.failed(name, f"a list of {n} clips' features {where}", size,
                      "return one features tensor per clip, in the order of the clips: out[i] is what clip i gets")
        return None
    if None in source:
        bad = [i for i, s in enumerate(source) if s is None]
        arrays = [_numpy(out[i]) for i in bad]
        zeros = all(a is not None and a.size and not a.any() for a in arrays)
        hint = ("zeros are the zeroed-audio control, another row of the table; this one gives each clip the real "
                "features of ANOTHER clip" if zeros else
                "a control must be made of REAL clips (features from the same distribution, only from the wrong "
                "example): random noise, or changed features, test something else. out[i] = features[perm[i]]")
        checks.failed(name, f"each clip's output equal to one of the input clips {where}",
                      f"clips {bad} match none", hint)
        return None
    if len(set(source)) == 1:
        checks.failed(name, f"a permutation of the clips {where}", f"clip {source[0]} for everyone",
                      "give each clip a different one, every clip used once: the same clip for all is a constant "
                      "input, and its own clip is that clip's true audio")
        return None
    counts = Counter(source)
    if len(counts) != n:
        twice = sorted(j for j, c in counts.items() if c > 1)
        checks.failed(name, f"a permutation of the clips {where}", f"clips {twice} used more than once",
                      "use every clip exactly once (a permutation, drawn without replacement), so the control sees "
                      "the same mix of clips as the real run")
        return None
    if source == list(range(n)):
        checks.failed(name, f"every clip with another clip's features {where}", "every clip kept its own",
                      "this is the real model's input, not a control: " + _LEAK)
        return None
    kept = [i for i in range(n) if source[i] == i]
    if kept:
        checks.failed(name, f"no clip with its own features {where}", f"clips {kept} kept their own",
                      f"a random permutation can leave clips in place (clip {kept[0]} here); " + _LEAK)
        return None
    return source


# --------------------------------------------------------------------------- exercise 10.4: parse_answers

def reference_parse_answers(texts: Sequence[str], classes: Sequence[str]) -> list[str | None]:
    """The class each generated text names, or None (notebook 10, §Evaluation); :func:`answers.parse_answer`."""
    return [answers.parse_answer(t, classes) for t in texts]


DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SOUNDS = ["dog", "rooster", "rain", "sea waves", "crackling fire", "crying baby", "sneezing", "clock tick",
          "helicopter", "chainsaw"]
_NORMALISE = "normalise first, answers.normalise(text): lower-case, punctuation to spaces"
_WHOLE = "compare whole words, never a substring inside a word"
_NONE = "a text that names no class is invalid: return None for it, not a class"


def _cap(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


#: (texts with the rule each shows, classes): the cases exercise 10.4 is checked on, in this order
PARSE_CASES: list[tuple[list[tuple[str, str]], list[str]]] = [
    ([("seven", "the text is a class name"),
      ("Seven.", _NORMALISE + " (\"Seven.\" is \"seven\")"),
      ("  NINE ", _NORMALISE + " (\"  NINE \" is \"nine\")"),
      ("eight, I think", "the class may be followed by other words (\"eight, I think\" is \"eight\")"),
      ("seventeen", _WHOLE + ": \"seventeen\" is not \"seven\" (it is invalid)"),
      ("none", _WHOLE + ": \"none\" is not \"one\" (it is invalid)"),
      ("weight", _WHOLE + ": \"weight\" is not \"eight\" (it is invalid)"),
      ("one", "the text is a class name"),
      ("four four", "the same class twice is still that class"),
      ("seven or eight", "two different classes named is no answer: None"),
      ("I don't know", _NONE),
      ("", _NONE + " (the empty text too)")], DIGITS),
    ([("Sea waves.", "a class may have several words: compare the text's first words with ALL the class's words"),
      ("crackling fire, maybe", "a class may have several words, and other words may follow it"),
      ("Crying baby", _NORMALISE + "; a class may have several words"),
      ("rainy", _WHOLE + ": \"rainy\" is not \"rain\" (it is invalid)"),
      ("helicopters", _WHOLE + ": \"helicopters\" is not \"helicopter\" (it is invalid)"),
      ("dog", "the text is a class name"),
      ("chainsaw or helicopter", "two different classes named is no answer: None"),
      ("clock", "part of a class is no class: \"clock\" is not \"clock tick\" (it is invalid)"),
      ("rooster!", _NORMALISE), ("hmm", _NONE)], SOUNDS),
]


def _words(text: str, lower: bool = True, punct: bool = True) -> list[str]:
    """The text's words: lower-cased and punctuation to spaces unless a mistake leaves them."""
    t = text.lower() if lower else text
    if punct:
        t = "".join(ch if ch.isalnum() or ch.isspace() else " " for ch in t)
    return t.split()


def _rule(words: list[str], classes: Sequence[str], match: str = "first words", two: str = "none") -> str | None:
    """The parse_answer rule on split words, with one part of it changed: ``match`` says which classes
    start the text ("first words", "first word only", "exact"), ``two`` what two classes give ("none", "first")."""
    def starts(c: str) -> bool:
        if match == "first word only":
            return words[:1] == [c]
        if match == "exact":
            return words == c.split()
        return words[:len(c.split())] == c.split()

    found = [c for c in classes if starts(c)]
    if not found:
        return None
    best = max(found, key=lambda c: len(c.split()))
    rest = words[len(best.split()):]
    other = any(c != best and any(rest[i:i + len(c.split())] == c.split() for i in range(len(rest)))
                for c in classes)
    return None if other and two == "none" else best


def _parse_variant(texts: Sequence[str], classes: Sequence[str], how: str) -> list[Any]:
    """What a typical parsing mistake (``how``) returns."""
    want = reference_parse_answers(texts, classes)
    if how == "substring":  # the first class (in class order) found anywhere in the lower-cased text
        return [next((c for c in classes if c in t.lower()), None) for t in texts]
    if how == "unique substring":
        found = [[c for c in classes if c in t.lower()] for t in texts]
        return [f[0] if len(f) == 1 else None for f in found]
    if how == "case-sensitive":
        return [_rule(_words(t, lower=False), classes) for t in texts]
    if how == "no punctuation stripping":
        return [_rule(_words(t, punct=False), classes) for t in texts]
    if how in ("first word only", "exact"):
        return [_rule(_words(t), classes, match=how) for t in texts]
    if how == "first of two classes":
        return [_rule(_words(t), classes, two="first") for t in texts]
    if how == "first class":
        return [classes[0] if w is None else w for w in want]
    if how == "most common":
        common = Counter(w for w in want if w is not None).most_common(1)[0][0]
        return [common if w is None else w for w in want]
    if how == "empty string":
        return ["" if w is None else w for w in want]
    if how == "index":
        return [None if w is None else list(classes).index(w) for w in want]
    raise ValueError(f"unknown parsing variant {how!r}")


#: (variant of :func:`_parse_variant`, hint), tried in this order
PARSE_MISTAKES: list[tuple[str, str]] = [
    ("substring", "a substring match: \"seventeen\" contains \"seven\" and \"none\" contains \"one\", but neither "
                  "names that class. " + _cap(_WHOLE) + ": split the normalised text into words and compare the first "
                  "word(s) with the class's words"),
    ("unique substring", "a substring match: \"weight\" contains \"eight\", \"rainy\" contains \"rain\". "
                         + _cap(_WHOLE)),
    ("case-sensitive", "the comparison is case-sensitive: \"Seven.\" and \"  NINE \" are valid answers. "
                       + _cap(_NORMALISE)),
    ("no punctuation stripping", "punctuation is still attached: \"Seven.\" and \"eight, I think\" are valid "
                                 "answers. " + _cap(_NORMALISE)),
    ("first word only", "you compared only the first word: \"sea waves\" has two, so compare the text's first "
                        "len(class.split()) words with the class's words"),
    ("exact", "the whole text need not equal the class: an answer may go on (\"eight, I think\" is \"eight\"); "
              "compare the first word(s) only"),
    ("first of two classes", "two different classes named (\"seven or eight\") is no answer: return None, not the "
                             "first one"),
    ("first class", "an invalid answer was mapped to the first class: " + _NONE + ". Mapping it to a class hides "
                    "the invalid outputs and, for that class, counts luck as skill"),
    ("most common", "an invalid answer was mapped to the most common class: " + _NONE + ". Then the invalid rate "
                    "is 0 and the accuracy of that class looks better than it is"),
    ("empty string", "return None for an invalid answer, not an empty string"),
    ("index", "return the class NAME (a string from classes), not its index"),
]


def parse_mistake(found: list[Any], want: list[Any], texts: Sequence[str], classes: Sequence[str]) -> str:
    """The hint of the typical mistake that explains ``found``, or "" when none does.

    A mistake explains an answer when it gives the learner's answer on every text the learner got
    wrong; of those, the one that agrees with the learner on the most texts wins (ties: list order).
    """
    wrong = [k for k in range(len(texts)) if found[k] != want[k]]
    best, best_agree = "", -1
    for how, hint in PARSE_MISTAKES:
        variant = _parse_variant(texts, classes, how)
        if all(variant[k] == found[k] for k in wrong):
            agree = sum(v == f for v, f in zip(variant, found))
            if agree > best_agree:
                best, best_agree = hint, agree
    return best


def check_parse_answers(fn: Callable) -> None:
    """Check ``parse_answers(texts, classes) -> list[str | None]`` (notebook 10, §Evaluation) against
    :func:`mmcourse.answers.parse_answer` on :data:`PARSE_CASES`."""
    name = "parse_answers"
    for cases, classes in PARSE_CASES:
        texts = [t for t, _ in cases]
        found = checks.attempt(name, fn, list(texts), list(classes), fallback="mmcourse.answers.parse_answer")
        if checks.is_pending(found):
            return
        if isinstance(found, str) or not isinstance(found, (list, tuple)) or len(found) != len(texts):
            checks.failed(name, f"a list of {len(texts)} answers (a class or None each)",
                          f"{type(found).__name__} {found!r:.60}",
                          "return one answer per text, in the order of the texts: [parse(t) for t in texts]")
            return
        found = list(found)
        want = reference_parse_answers(texts, classes)
        if found == want:
            continue
        i = next(k for k in range(len(texts)) if found[k] != want[k])
        text, rule = cases[i]
        checks.failed(name, f"{want[i]!r} for the text {text!r}", repr(found[i]),
                      parse_mistake(found, want, texts, classes) or rule)
        return
    checks.passed(name, f"{sum(len(c) for c, _ in PARSE_CASES)} texts: digit words and multi-word sound classes")


# --------------------------------------------------------------------------- quizzes

def check_quiz_10_1(fn: Callable) -> None:
    """Quiz 10.1 (a number).

    Question: "Whisper's encoder gives 50 frames per second. How many audio tokens per second does the LLM
    get after stacking k = 4 frames?"
    """
    checks.quiz_with_hints(
        "quiz 10.1 (audio tokens per second)", fn, 12.5,
        "Stacking k = 4 consecutive frames into one token divides the rate by 4: 50 / 4 = 12.5 tokens per second "
        "(each of 4 × 384 = 1,536 features for Whisper tiny). A 1-s digit costs about 12 tokens, a 5-s ESC-10 "
        "clip about 62, instead of 50 and 250: the LLM's attention cost and context shrink by 4.",
        0.02,
        [(200.0, "200 = 50 × 4: stacking k frames into one token DIVIDES the number of tokens by k."),
         (50.0, "50 is the rate before stacking: stacking k = 4 frames into one token divides it by 4."),
         (4.0, "4 is k, the number of frames per token, not the tokens per second.")])


QUIZ_10_2 = {
    "a": "shuffled audio: each clip gets the features of another clip",
    "b": "the blind LLM: the same prompt with no audio at all",
    "c": "zeroed audio: the audio tokens are there, but all features are 0",
    "d": "the majority class: always answer the most frequent class",
}


def check_quiz_10_2(fn: Callable) -> None:
    """Quiz 10.2 (multiple choice: return the letter).

    Question: "Which control measures what the LLM answers from its prior alone, with no audio evidence?"
    a) shuffled audio: each clip gets the features of another clip
    b) the blind LLM: the same prompt with no audio at all
    c) zeroed audio: the audio tokens are there, but all features are 0
    d) the majority class: always answer the most frequent class
    (the options are :data:`QUIZ_10_2`; a test keeps this docstring equal to them)
    """
    checks.quiz("quiz 10.2 (the LLM's prior)", fn, "b",
                "Without any audio token the LLM sees only the prompt, so whatever it gets right comes from the "
                "language model's prior (e.g. it always says \"seven\", or knows the instruction's answer from its "
                "text). Shuffled audio measures whether the answer depends on THIS clip's audio (a model that "
                "reads the prompt, or learned a class prior through the projector, still scores there); zeroed "
                "audio feeds the projector a constant input, whose output the training has shaped; the majority "
                "class is the floor of a constant guess and needs no model. The LLM+audio result means something "
                "only if it beats all four.",
                choices=QUIZ_10_2)


def check_quiz_10_3(fn: Callable) -> None:
    """Quiz 10.3 (a number).

    Question: "A clip padded to Whisper's 30 s, then stacked with k = 4: how many audio tokens does the LLM get?"
    """
    checks.quiz_with_hints(
        "quiz 10.3 (tokens of a padded clip)", fn, 375,
        "Whisper's encoder turns 30 s (3,000 mel frames at 100 per second, halved by its strided convolution) "
        "into 1,500 frames; stacking k = 4 gives 1,500 / 4 = 375 tokens, whatever the clip's real length. A 1-s "
        "digit run on its real length gives 50 frames, 12 tokens: padding costs 30 times more LLM context, almost "
        "all of it silence, and more than that in encoder time (attention grows with the square of the length).",
        0.02,
        [(1500.0, "1,500 is the number of encoder frames before stacking; k = 4 frames make one token."),
         (6000.0, "6,000 = 1,500 × 4: stacking k frames into one token DIVIDES the number of tokens by k."),
         (750.0, "750 = 3,000 / 4 starts from the mel frames: the encoder first halves them to 1,500."),
         (12.5, "12.5 is the tokens per SECOND; the padded clip lasts 30 s.")])
