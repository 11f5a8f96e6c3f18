"""From generated text to a class (mmcourse.answers) and the word error rate (mmcourse.metrics.wer):
the normalisers against transformers' own, parsing on hand cases, the score's counts, and WER with
its substitutions/deletions/insertions equal to jiwer's on random sentences."""
from __future__ import annotations

import math
import random

import jiwer
import pytest
from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

from mmcourse import answers, metrics
from mmcourse.answers import normalise, parse_answer, score

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SOUNDS = ["dog", "rooster", "rain", "sea_waves", "crackling_fire", "crying_baby", "sneezing", "clock_tick",
          "helicopter", "chainsaw"]  # mmcourse.data.esc.classes("esc10") spells them with underscores


# ---------------------------------------------------------------- normalise

def test_none_and_basic_normalisation():
    assert normalise("  Seven. ", "none") == "Seven."
    assert normalise("  Seven. ", "basic") == "seven"
    assert normalise("Sea_Waves!", "basic") == "sea waves"
    assert normalise("dog  barking,\tI think", "basic") == "dog barking i think"
    assert normalise("Seven.") == "seven"  # basic is the default
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalise("seven", "lower")


@pytest.mark.parametrize("text, expected", [
    ("seven", "7"), ("Seven.", "7"), ("zero", "0"), ("seventeen", "17"),
    ("one", "one"), ("One!", "one"),  # a lone "one" is left as a word
    ("o'clock", "0 clock"), ("seven o'clock", "70 clock"),
    ("one two", "12"), ("seven eight", "78"),  # consecutive number words merge
    ("uh, seven", "7"), ("hmm seven", "7"),  # hesitations removed
    ("dog barking, I think", "dog barking i think"),
])
def test_whisper_normalisation_is_transformers_and_does_what_the_docstring_says(text, expected):
    library = EnglishTextNormalizer({})
    assert normalise(text, "whisper") == library(text).strip() == expected


def test_normalise_docstring_states_the_whisper_facts():
    doc = " ".join(answers.normalise.__doc__.split())
    for fact in ('"seven" -> "7"', '"one" stays "one"', '"o\'clock" -> "0 clock"', '"seven o\'clock" -> "70 clock"',
                 '"one two" -> "12"', '"uh, seven" -> "7"'):
        assert fact in doc, fact


# ---------------------------------------------------------------- parse_answer

@pytest.mark.parametrize("text, expected", [
    ("seven", "seven"), ("Seven.", "seven"), ("  NINE ", "nine"), ("eight, I think", "eight"),
    ("one", "one"), ("four four", "four"), ("zero!", "zero"),
    ("seventeen", None), ("none", None), ("weight", None), ("seven-teen", "seven"),
    ("seven or eight", None), ("one, two", None), ("I don't know", None), ("the answer is seven", None),
    ("", None), ("7", None),
])
def test_parse_digits_basic(text, expected):
    assert parse_answer(text, DIGITS) == expected


@pytest.mark.parametrize("text, expected", [
    ("Sea waves.", "sea_waves"), ("sea_waves", "sea_waves"), ("crackling fire, maybe", "crackling_fire"),
    ("dog", "dog"), ("Dog barking", "dog"), ("rainy", None), ("helicopters", None), ("clock", None),
    ("clock tick", "clock_tick"), ("chainsaw or helicopter", None), ("rain, no, sea waves", None),
    ("dog, definitely a dog", "dog"),
])
def test_parse_multi_word_classes(text, expected):
    assert parse_answer(text, SOUNDS) == expected


def test_the_longest_class_that_starts_the_text_wins():
    classes = ["dog", "dog barking", "rain"]
    assert parse_answer("dog barking, loudly", classes) == "dog barking"
    assert parse_answer("dog, barking", classes) == "dog barking"  # punctuation is gone after normalisation
    assert parse_answer("dog", classes) == "dog"
    assert parse_answer("dog in the rain", classes) is None  # two classes


def test_the_normaliser_changes_which_answers_are_valid():
    assert [parse_answer(t, DIGITS, "none") for t in ("seven", "Seven.", "seven o'clock")] == ["seven", None, "seven"]
    assert parse_answer("7", DIGITS, "whisper") == "seven"  # "seven" is "7" too
    assert parse_answer("7", DIGITS, "basic") is None
    assert parse_answer("seven o'clock", DIGITS, "whisper") is None  # "70 clock"
    assert parse_answer("seven o'clock", DIGITS, "basic") == "seven"
    assert parse_answer("uh, seven", DIGITS, "whisper") == "seven" and parse_answer("uh, seven", DIGITS) is None
    assert parse_answer("four four", DIGITS, "whisper") is None  # "44"
    assert parse_answer("One.", DIGITS, "whisper") == "one"


def test_parse_rejects_ambiguous_or_malformed_classes():
    with pytest.raises(ValueError, match="same after normalisation"):
        parse_answer("dog", ["Dog", "dog"])
    with pytest.raises(ValueError, match="same after normalisation"):
        parse_answer("7", ["seven", "7"], "whisper")
    with pytest.raises(ValueError, match="empty after normalisation"):
        parse_answer("dog", ["dog", "?!"])
    with pytest.raises(ValueError, match="not one string"):
        parse_answer("dog", "dog")
    with pytest.raises(ValueError, match="generated string"):
        parse_answer(None, DIGITS)


# ---------------------------------------------------------------- score

def test_score_counts_by_hand():
    texts = ["Seven.", "one", "I don't know", "seven", "two or three", "three"]
    gold = ["seven", 1, "two", 7, "two", "four"]
    s = score(texts, gold, DIGITS)
    assert s["answers"] == ["seven", "one", None, "seven", None, "three"]
    assert (s["n"], s["correct"], s["invalid"]) == (6, 3, 2)
    assert s["accuracy"] == pytest.approx(0.5) and s["invalid_rate"] == pytest.approx(1 / 3)
    assert s["ci"] == metrics.wilson_interval(3, 6)
    assert s["per_class"]["seven"] == 1.0 and s["per_class"]["two"] == 0.0 and s["per_class"]["four"] == 0.0
    assert s["per_class_n"]["seven"] == 2 and s["per_class_n"]["two"] == 2 and s["per_class_n"]["zero"] == 0
    assert math.isnan(s["per_class"]["zero"])
    assert s["how"] == "basic"


def test_score_with_the_whisper_normaliser():
    s = score(["7", "seven o'clock"], ["seven", "seven"], DIGITS, how="whisper")
    assert s["answers"] == ["seven", None] and s["correct"] == 1 and s["invalid"] == 1


def test_score_errors_name_the_problem():
    with pytest.raises(ValueError, match="2 texts but 1 gold"):
        score(["a", "b"], ["one"], DIGITS)
    with pytest.raises(ValueError, match="empty"):
        score([], [], DIGITS)
    with pytest.raises(ValueError, match=r"gold\[0\] = 'ten'"):
        score(["one"], ["ten"], DIGITS)
    with pytest.raises(ValueError, match=r"gold\[0\] = 10"):
        score(["one"], [10], DIGITS)


# ---------------------------------------------------------------- WER

@pytest.mark.parametrize("ref, hyp, edits", [
    ("the cat sat", "the cat sat", (0, 0, 0)),
    ("the cat sat", "the hat sat", (1, 0, 0)),
    ("the cat sat", "the sat", (0, 1, 0)),
    ("the cat sat", "the cat sat down", (0, 0, 1)),
    ("a b", "", (0, 2, 0)),
    ("a", "b c d", (1, 0, 2)),
    ("a b c d", "a x c", (1, 1, 0)),
    ("a b", "b a", (0, 1, 1)),  # 2 edits either way; rapidfuzz's (jiwer's) tie-break: delete a, insert a
])
def test_word_edits_hand_cases(ref, hyp, edits):
    assert metrics.word_edits(ref.split(), hyp.split()) == edits
    out = jiwer.process_words(ref, hyp)
    assert (out.substitutions, out.deletions, out.insertions) == edits


def test_edit_table_by_hand():
    # "a b" -> "b": D[2][1] = 1 (delete a); D[1][1] = 1 (a -> b)
    assert metrics.edit_table(["a", "b"], ["b"]) == [[0, 1], [1, 1], [2, 1]]


def test_wer_hand_cases():
    assert metrics.wer("a b c d", "a x c") == pytest.approx(2 / 4)
    assert metrics.wer(["a b", "c d e f"], ["a b", "x"]) == pytest.approx(4 / 6)  # corpus: 4 edits / 6 words
    assert metrics.wer("a", "b c d") == pytest.approx(3.0)  # insertions: WER above 1
    assert metrics.wer("Seven.", "seven") == 1.0  # no normalisation inside
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        metrics.wer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="reference 1 is empty"):
        metrics.wer(["a", "  "], ["a", "b"])
    with pytest.raises(ValueError, match="no sentences"):
        metrics.wer([], [])
    with pytest.raises(ValueError, match="two strings"):
        metrics.wer([["a", "b"]], ["a b"])


def _random_sentences(rng: random.Random, count: int) -> tuple[list[str], list[str]]:
    vocab = ["yes", "no", "up", "down"]
    refs = [" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 8))) for _ in range(count)]
    hyps = [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 8))) for _ in range(count)]
    return refs, hyps


def test_word_edits_equal_jiwer_on_random_sentences():
    rng = random.Random(10)
    refs, hyps = _random_sentences(rng, 3000)
    splits = set()
    for ref, hyp in zip(refs, hyps):
        out = jiwer.process_words(ref, hyp)
        mine = metrics.word_edits(ref.split(), hyp.split())
        assert mine == (out.substitutions, out.deletions, out.insertions), (ref, hyp)
        assert sum(mine) == metrics.edit_table(ref.split(), hyp.split())[-1][-1]  # a minimum alignment
        splits.add(mine)
    assert len(splits) > 50  # the cases cover many mixes of S, D and I


def test_wer_equals_jiwer_on_random_corpora():
    rng = random.Random(11)
    for _ in range(200):
        refs, hyps = _random_sentences(rng, rng.randint(1, 6))
        assert metrics.wer(refs, hyps) == pytest.approx(jiwer.wer(refs, hyps), abs=1e-12)
    ref, hyp = _random_sentences(rng, 1)
    assert metrics.wer(ref[0], hyp[0]) == pytest.approx(jiwer.wer(ref[0], hyp[0]), abs=1e-12)
