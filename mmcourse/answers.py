"""From generated text to a class: normalisation, parsing and an honest score (notebook 10, §Evaluation; notebook 11).

An LLM answers in free text: "Seven.", "dog barking, I think", "seventeen", "I don't know". To
report an accuracy, each text must be turned into one of the task's classes, or declared
*invalid* (it names no class, or several). The score then has two numbers, not one: the
accuracy (invalid answers count as wrong) and the rate of invalid outputs, which says how often
the model did not even answer the question.

Both depend on the normalisation applied to the text before the comparison, so the course
states it (:func:`normalise`) and shows how much another choice changes the score:

* ``"none"``: strip the surrounding spaces only ("Seven." is not "seven");
* ``"basic"`` (the default): lower-case, punctuation to spaces, single spaces
  (:func:`mmcourse.metrics.caption_tokens`, the tokenisation of notebook 08);
* ``"whisper"``: the ``EnglishTextNormalizer`` that Whisper's papers score with
  (``transformers.models.whisper.english_normalizer``), which does much more (see :func:`normalise`).
"""
from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence
from typing import Any

from mmcourse.metrics import caption_tokens, wilson_interval

NORMALISERS = ("none", "basic", "whisper")


@functools.lru_cache(maxsize=1)
def _whisper_normaliser() -> Any:
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer
    return EnglishTextNormalizer({})  # {}: no British -> American spelling map


def normalise(text: str, how: str = "basic") -> str:
    """``text`` normalised for comparison with a class name (notebook 10, §Evaluation).

    ``how``:

    * ``"none"``: ``text.strip()``, nothing else.
    * ``"basic"``: lower-case; every character that is neither a letter, a digit nor a space
      becomes a space ("sea_waves" -> "sea waves", "Seven." -> "seven"); runs of spaces become one.
    * ``"whisper"``: transformers' ``EnglishTextNormalizer({})`` (Whisper's evaluation
      normaliser, without a spelling map). Besides lower-casing and removing punctuation, it
      rewrites number words as digits, and not always as one expects:

      - "seven" -> "7", "zero" -> "0", "oh" -> "0", "seventeen" -> "17", but "one" stays
        "one" (alone, "one" is too often a pronoun to be turned into 1);
      - consecutive number words merge into one number: "one two" -> "12", "seven eight" -> "78";
      - "o'clock" -> "0 clock", so "seven o'clock" -> "70 clock";
      - hesitations are removed: "uh, seven" -> "7", "hmm seven" -> "7".

      So with digit words as classes, "7" and "seven" become the same answer (class "seven"
      is "7" too) while "seven o'clock" becomes invalid: the choice of normaliser moves both
      the accuracy and the invalid rate, which is why a score must say which one it used.
    """
    if how == "none":
        return text.strip()
    if how == "basic":
        return " ".join(caption_tokens(text))
    if how == "whisper":
        return " ".join(_whisper_normaliser()(text).split())
    raise ValueError(f"unknown normalisation how={how!r}; use one of {NORMALISERS}")


@functools.lru_cache(maxsize=64)
def _class_words(classes: tuple[str, ...], how: str) -> tuple[tuple[str, ...], ...]:
    """Each class name normalised and split into words; distinct and non-empty, or a ValueError."""
    words = tuple(tuple(normalise(c, how).split()) for c in classes)
    for c, w in zip(classes, words):
        if not w:
            raise ValueError(f"class name {c!r} is empty after normalisation how={how!r}: "
                             "give every class a name with at least one letter or digit")
    seen: dict[tuple[str, ...], str] = {}
    for c, w in zip(classes, words):
        if w in seen:
            raise ValueError(f"classes {seen[w]!r} and {c!r} are the same after normalisation how={how!r} "
                             f"({' '.join(w)!r}): an answer could not tell them apart; rename one")
        seen[w] = c
    return words


def _contains(words: Sequence[str], phrase: Sequence[str]) -> bool:
    """True when ``phrase`` occurs in ``words`` as consecutive whole words."""
    n = len(phrase)
    return any(list(words[i:i + n]) == list(phrase) for i in range(len(words) - n + 1))


def parse_answer(text: str, classes: Sequence[str], how: str = "basic") -> str | None:
    """The class that a generated ``text`` names, or None when it is invalid (notebook 10, §Evaluation).

    The rule: normalise the text and every class name the same way (:func:`normalise` with
    ``how``) and split them into words. The text names a class when its first word(s) are
    exactly that class's words, as whole words: "seven", "Seven." and "eight, I think" are
    valid; "seventeen" is not "seven" and "none" is not "one" (no substring inside a word), and
    "the answer is seven" is invalid (the answer must come first). When several classes start
    the text (a class that extends another: "dog" and "dog barking"), the longest one is the
    answer. The text is invalid (None) when no class starts it, or when the rest of it names
    ANOTHER class as whole words ("seven or eight", "rain, no, sea waves"): two different
    classes named is no answer. Repeating the same class is fine.
    """
    if isinstance(classes, str):
        raise ValueError("classes must be a list of class names, not one string: wrap it as [name]")
    if not isinstance(text, str):
        raise ValueError(f"text must be the generated string, got {type(text).__name__}")
    names = _class_words(tuple(classes), how)
    words = normalise(text, how).split()
    starts = [i for i, w in enumerate(names) if list(words[:len(w)]) == list(w)]
    if not starts:
        return None
    best = max(starts, key=lambda i: len(names[i]))
    rest = words[len(names[best]):]
    if any(i != best and _contains(rest, w) for i, w in enumerate(names)):
        return None
    return classes[best]


def score(texts: Sequence[str], gold: Sequence[str | int], classes: Sequence[str],
          how: str = "basic") -> dict[str, Any]:
    """Accuracy and invalid rate of generated answers against the gold classes (notebook 10, §Evaluation).

    ``gold[i]`` is the class of example i, as a name from ``classes`` or as its index in
    ``classes`` (a dataset's integer label). Each text is parsed by :func:`parse_answer` with the
    same ``how``; an invalid answer (None) counts as wrong. Returns a dict:

    * ``n``, ``correct``, ``accuracy`` and ``ci`` (its 95 % Wilson interval, :func:`mmcourse.metrics.wilson_interval`);
    * ``invalid`` (how many texts name no class, or several) and ``invalid_rate``;
    * ``per_class``: {class: accuracy over the examples of that gold class} (nan for a class with
      no example) and ``per_class_n``: {class: number of examples};
    * ``answers``: the parsed answer of each text (a class or None), and ``how``.
    """
    classes = list(classes)
    if len(texts) != len(gold):
        raise ValueError(f"{len(texts)} texts but {len(gold)} gold labels: give one gold class per text")
    if not texts:
        raise ValueError("no answers to score: texts and gold are empty")
    names = []
    for i, g in enumerate(gold):
        if isinstance(g, str) and g in classes:
            names.append(g)
        elif not isinstance(g, (str, bool)) and hasattr(g, "__index__") and 0 <= operator.index(g) < len(classes):
            names.append(classes[operator.index(g)])
        else:
            raise ValueError(f"gold[{i}] = {g!r} is neither one of the classes {classes} nor an index 0.."
                             f"{len(classes) - 1} into them")
    answers = [parse_answer(t, classes, how) for t in texts]
    hits = [a == g for a, g in zip(answers, names)]
    n, correct = len(texts), sum(hits)
    per_class_n = {c: names.count(c) for c in classes}
    per_class = {c: (sum(h for h, g in zip(hits, names) if g == c) / per_class_n[c]) if per_class_n[c] else math.nan
                 for c in classes}
    invalid = sum(a is None for a in answers)
    return {"n": n, "correct": correct, "accuracy": correct / n, "ci": wilson_interval(correct, n),
            "invalid": invalid, "invalid_rate": invalid / n, "per_class": per_class, "per_class_n": per_class_n,
            "answers": answers, "how": how}
