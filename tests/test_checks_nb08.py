"""Checks of notebook 08_image_captioning: the reference passes, typical mistakes get their hint."""
from __future__ import annotations

import math
import re
from collections import Counter

import pytest
import torch

from mmcourse import metrics
from mmcourse.captioning import beam_search
from mmcourse.checks import nb08
from checkhelp import verdict, stub


pytestmark = pytest.mark.usefixtures("lenient")


@pytest.mark.parametrize("check", [nb08.check_make_labels, nb08.check_clipped_precision,
                                   nb08.check_brevity_penalty, nb08.check_beam_search_one])
def test_unattempted_exercise_is_pending(capsys, check):
    out = verdict(check, stub, capsys)
    assert "pending" in out and "✗" not in out and out.count("pending") == 1


# ---------------------------------------------------------------- 8.1 make_labels

def _masked(t, pad=0):
    return t.masked_fill(t == pad, -100)


def test_make_labels_reference_passes(capsys):
    out = verdict(nb08.check_make_labels, nb08.reference_make_labels, capsys)
    assert out.count("✓") == 2 and "✗" not in out


def test_make_labels_hand_computed_row():
    """Row 1 of the batch is <bos> 6 8 <eos> <pad>…: the labels by hand."""
    inputs, labels = nb08.reference_make_labels(nb08.label_batch(), 0)
    assert inputs[1].tolist() == [1, 6, 8, 2, 0, 0, 0]
    assert labels[1].tolist() == [6, 8, 2, -100, -100, -100, -100]
    assert labels[2].tolist() == [4, 5, 6, 7, 8, 9, 2]  # a full row keeps every label


def test_make_labels_clone_then_mask_passes(capsys):
    def make_labels(tokens, pad_id):
        labels = tokens[:, 1:].clone()
        labels[labels == pad_id] = -100
        return tokens[:, :-1], labels
    out = verdict(nb08.check_make_labels, make_labels, capsys)
    assert out.count("✓") == 2 and "✗" not in out


def _in_place(tokens, pad_id):
    labels = tokens[:, 1:]
    labels[labels == pad_id] = -100  # writes into tokens: the inputs get -100 too
    return tokens[:, :-1], labels


@pytest.mark.parametrize("wrong, hint", [
    (lambda t, p: (t[:, :-1], t[:, 1:]), "padding is still in the labels"),
    (lambda t, p: (t[:, :-1], _masked(t[:, :-1], p)), "not shifted"),
    (lambda t, p: (t[:, :-1], _masked(t, p)), "not shifted"),
    (lambda t, p: (t, t), "not shifted"),
    (lambda t, p: (t[:, 1:], _masked(t[:, :-1], p)), "shifted the wrong way"),
    (lambda t, p: (_masked(t[:, :-1], p), _masked(t[:, 1:], p)), "-100 only goes into the labels"),
    (lambda t, p: (_masked(t[:, :-1], p), t[:, 1:]), "not the inputs"),
    (_in_place, "tokens[:, 1:] is a view"),
    (lambda t, p: (t[:, :-1], (t != 0).long()), "attention mask"),  # the seed notebook's error
    (lambda t, p: (t[:, :-1], (t[:, 1:] != p).long()), "attention mask"),
    (lambda t, p: (t[:, :-1], _masked(t[:, 1:], p).float()), "torch.long"),
    (lambda t, p: (t[:, :-1].numpy(), _masked(t[:, 1:], p).numpy()), "two torch tensors"),
    (lambda t, p: _masked(t[:, 1:], p), "a pair (inputs, labels)"),
    (lambda t, p: (t[:, :-1], _masked(t[:, 1:], 0)), "use the pad_id argument"),
    (lambda t, p: (t[:, :-1], t[:, 2:]), "both drop one column"),
])
def test_make_labels_typical_mistakes(capsys, wrong, hint):
    out = verdict(nb08.check_make_labels, wrong, capsys)
    assert "✗" in out and hint in out, out


# ---------------------------------------------------------------- 8.2 clipped_precision

def _grams(tokens, n):
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def test_clipped_precision_reference_and_an_independent_solution_pass(capsys):
    out = verdict(nb08.check_clipped_precision, nb08.reference_clipped_precision, capsys)
    assert out.count("✓") == 1 and "✗" not in out

    def mine(hyp, refs, n):
        h = Counter(_grams(hyp, n))
        most = {g: max(Counter(_grams(r, n))[g] for r in refs) for g in h}
        return sum(min(c, most[g]) for g, c in h.items()), sum(h.values())
    out = verdict(nb08.check_clipped_precision, mine, capsys)
    assert out.count("✓") == 1 and "✗" not in out


def test_clipped_precision_hand_computed_cases():
    assert nb08.reference_clipped_precision("the the the the".split(), [["the", "cat"]], 1) == (1, 4)
    # bigrams a-dog ×2, dog-on ×2, on-a, on-grass; each reference has a-dog, dog-on, on-a at most once
    assert nb08.reference_clipped_precision("a dog on a dog on grass".split(),
                                            ["a dog on the grass".split(), "the dog on a lawn".split()], 2) == (3, 6)
    assert nb08.reference_clipped_precision(["a", "dog"], [["a", "dog", "runs"]], 4) == (0, 0)


def _no_clip(hyp, refs, n):
    in_refs = {g for r in refs for g in _grams(r, n)}
    grams = _grams(hyp, n)
    return sum(g in in_refs for g in grams), len(grams)


def _sum_clip(hyp, refs, n):
    h, total = Counter(_grams(hyp, n)), Counter()
    for r in refs:
        total.update(_grams(r, n))
    return sum(min(c, total[g]) for g, c in h.items()), sum(h.values())


def _ref_total(hyp, refs, n):
    return metrics.clipped_precision(hyp, refs, n)[0], sum(len(_grams(r, n)) for r in refs)


@pytest.mark.parametrize("wrong, hint", [
    (_no_clip, "no clipping"),
    (_sum_clip, "the MAX over references"),
    (lambda hyp, refs, n: metrics.clipped_precision(hyp, refs, 1), "always counted unigrams"),
    (_ref_total, "you counted the references' n-grams"),
    (lambda hyp, refs, n: (metrics.clipped_precision(hyp, refs, n)[0], len(hyp) - n + 1), "shorter than n"),
    (lambda hyp, refs, n: (lambda c, t: c / max(t, 1))(*metrics.clipped_precision(hyp, refs, n)), "not their ratio"),
])
def test_clipped_precision_typical_mistakes(capsys, wrong, hint):
    out = verdict(nb08.check_clipped_precision, wrong, capsys)
    assert "✗" in out and hint in out, out


# ---------------------------------------------------------------- 8.3 brevity_penalty

def test_brevity_penalty_reference_and_the_textbook_formula_pass(capsys):
    out = verdict(nb08.check_brevity_penalty, nb08.reference_brevity_penalty, capsys)
    assert out.count("✓") == 1 and "✗" not in out
    out = verdict(nb08.check_brevity_penalty, lambda c, r: 1.0 if c >= r else math.exp(1 - r / c), capsys)
    assert out.count("✓") == 1 and "✗" not in out


def test_brevity_penalty_hand_computed():
    assert nb08.reference_brevity_penalty(5, 8) == pytest.approx(math.exp(-0.6))
    assert nb08.reference_brevity_penalty(12, 10) == 1.0


@pytest.mark.parametrize("wrong, hint", [
    (lambda c, r: 1.0, "there is no penalty"),
    (lambda c, r: math.exp(1 - c / r) if c < r else 1.0, "inverted"),
    (lambda c, r: min(1.0, math.exp(1 - c / r)), "inverted"),
    (lambda c, r: math.exp(1 - r / c), "neither penalised nor rewarded"),
    (lambda c, r: math.exp(1 - max(c, r) / min(c, r)), "penalises only short hypotheses"),
    (lambda c, r: min(1.0, c / r), "not the length ratio"),
    (lambda c, r: 1.0 if c >= r else math.exp(-r / c), "for c < r the penalty is exp(1 − r/c)"),
    (lambda c, r: None, "a number"),
])
def test_brevity_penalty_typical_mistakes(capsys, wrong, hint):
    out = verdict(nb08.check_brevity_penalty, wrong, capsys)
    assert "✗" in out and hint in out, out


# ---------------------------------------------------------------- 8.4 beam_search_one

def _exhaustive(lm, max_len, alpha):
    """The best caption over every sequence: ended by <eos> within max_len tokens, or max_len words without it."""
    best = (-math.inf, None)

    def grow(prefix, raw):
        nonlocal best
        logp = lm(prefix)
        for w in range(len(nb08.TOY_WORDS)):
            r, length = raw + logp[w], len(prefix)
            if w == nb08.EOS or length == max_len:
                words = list(prefix[1:]) + ([] if w == nb08.EOS else [w])
                if r / length ** alpha > best[0]:
                    best = (r / length ** alpha, words)
            else:
                grow(prefix + (w,), r)
    grow((nb08.BOS,), 0.0)
    return best


@pytest.mark.parametrize("case", [c for c in nb08.BEAM_CASES if c[1] > 1], ids=lambda c: c[-1])
def test_toy_cases_beam_search_finds_the_exhaustive_optimum(case):
    """So every correct variant of beam search (finished hypotheses in the beam or apart) agrees."""
    model, beam, max_len, alpha, _ = case
    lm = nb08.TOY_MODELS[model]
    found = beam_search(nb08.toy_step(lm, max_len), 1, nb08.BOS, nb08.EOS, beam=beam, max_len=max_len,
                        alpha=alpha)[0][0]
    score, words = _exhaustive(lm, max_len, alpha)
    assert found == words and nb08.sequence_score(lm, found, max_len, alpha) == pytest.approx(score)


def test_toy_cases_show_what_they_claim():
    lm = nb08.TOY_MODELS

    def greedy(name, max_len):
        return beam_search(nb08.toy_step(lm[name], max_len), 1, nb08.BOS, nb08.EOS, beam=1, max_len=max_len)[0][0]
    A, B, C = nb08.A, nb08.B, nb08.C
    assert greedy("greedy", 5) == [B, C, A]
    assert greedy("beam", 5) == [A] and _exhaustive(lm["beam"], 5, 0.0)[1] == _exhaustive(lm["beam"], 5, 1.0)[1] == [B]
    assert _exhaustive(lm["alpha"], 6, 0.0)[1] == [A] and _exhaustive(lm["alpha"], 6, 1.0)[1] == [B, C, C]
    assert _exhaustive(lm["loop"], 5, 0.0)[1] == [A] * 5


def _learner_beam(step, bos, eos, beam, max_len, alpha, *, normalise=True, width=None, pick=0,
                  strip=True, stop=True):
    """A plain-Python beam search as a learner writes it; finished hypotheses stay in the beam."""
    hyps = [([bos], 0.0, False)]
    t = 0
    while t < max_len or not stop:
        t += 1
        live = [h for h in hyps if not h[2]]
        if not live:
            break
        logp = step(torch.tensor([h[0] for h in live]))
        cands = [h for h in hyps if h[2]]
        for i, (seq, raw, _) in enumerate(live):
            cands += [(seq + [w], raw + float(logp[i, w]), w == eos) for w in range(logp.shape[1])]
        power = alpha if normalise is True else normalise
        hyps = sorted(cands, key=lambda h: h[1] / (len(h[0]) - 1) ** power, reverse=True)[:width or beam]
    seq = hyps[pick][0]
    if not strip:
        return seq
    seq = seq[1:]
    return seq[:seq.index(eos)] if eos in seq else seq


def _separate_finished(step, bos, eos, beam, max_len, alpha):
    """The other common variant: finished hypotheses leave the beam for a list of their own."""
    live, finished = [([bos], 0.0)], []
    score = lambda h: h[1] / (len(h[0]) - 1) ** alpha  # noqa: E731
    for _ in range(max_len):
        logp = step(torch.tensor([seq for seq, _ in live]))
        cands = sorted(((seq + [w], raw + float(logp[i, w])) for i, (seq, raw) in enumerate(live)
                        for w in range(logp.shape[1])), key=score, reverse=True)
        live = []
        for seq, raw in cands:
            (finished if seq[-1] == eos else live).append((seq, raw))
            if len(live) == beam:
                break
        if not live:
            break
    seq = max(finished + live, key=score)[0][1:]
    return seq[:seq.index(eos)] if eos in seq else seq


@pytest.mark.parametrize("solution", [nb08.reference_beam_search_one, _learner_beam, _separate_finished])
def test_beam_search_correct_variants_pass(capsys, solution):
    out = verdict(nb08.check_beam_search_one, solution, capsys)
    assert out.count("✓") == len(nb08.BEAM_CASES) and "✗" not in out, out


@pytest.mark.parametrize("kwargs, hint", [
    ({"width": 1}, "the greedy caption"),
    ({"normalise": 0.0}, "alpha is ignored"),
    ({"normalise": 1.0}, "do not divide by the length"),
    ({"strip": False}, "drop the leading <bos>"),
    ({"pick": -1}, "not the last one in the beam"),
    ({"stop": False}, "stop the search after max_len steps"),
])
def test_beam_search_typical_mistakes(capsys, kwargs, hint):
    def wrong(step, bos, eos, beam, max_len, alpha):
        return _learner_beam(step, bos, eos, beam, max_len, alpha, **kwargs)
    out = verdict(nb08.check_beam_search_one, wrong, capsys)
    assert "✗" in out and hint in out, out


def test_beam_search_wrong_return_types(capsys):
    def with_score(step, bos, eos, beam, max_len, alpha):
        return _learner_beam(step, bos, eos, beam, max_len, alpha), -1.0
    assert "not its score" in verdict(nb08.check_beam_search_one, with_score, capsys)
    assert "one flat list" in verdict(nb08.check_beam_search_one, lambda *a: [[3]], capsys)


def test_beam_search_off_by_one_max_len(capsys):
    def short(step, bos, eos, beam, max_len, alpha):
        return _learner_beam(step, bos, eos, beam, max_len - 1, alpha)
    out = verdict(nb08.check_beam_search_one, short, capsys)
    assert "✗" in out and "off by one" in out, out


def test_toy_step_works_for_any_number_of_rows_and_refuses_runaway_searches():
    step = nb08.toy_step(nb08.TOY_MODELS["greedy"], max_len=3)
    one = step(torch.tensor([[nb08.BOS]]))
    many = step(torch.tensor([[nb08.BOS, nb08.B]] * 4))
    assert one.shape == (1, 6) and many.shape == (4, 6)
    assert torch.allclose(many.exp().sum(-1), torch.ones(4))
    with pytest.raises(RuntimeError, match="max_len"):
        step(torch.ones(2, 5, dtype=torch.long))


def test_strict_mode_raises(monkeypatch):
    from mmcourse import checks
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")
    with pytest.raises(checks.CheckFailed, match="no clipping"):
        nb08.check_clipped_precision(_no_clip)


# ---------------------------------------------------------------- quizzes

@pytest.mark.parametrize("check, right, wrong, explains", [
    (nb08.check_quiz_8_1, 100, 49, "320/32"),
    (nb08.check_quiz_8_2, 0.5488, 0.2466, "closest to the hypothesis"),
    (nb08.check_quiz_8_2, 0.5488, 0.3679, "exp(1 − 8/5)"),
    (nb08.check_quiz_8_3, "c", "a", "log N − log df"),
])
def test_quizzes(quiz_behaviour, check, right, wrong, explains):
    quiz_behaviour(check, right, wrong, explains)


def test_quiz_answers_computed():
    assert (320 // 32) ** 2 == 100
    ref_lengths = [8, 12]
    r = metrics.closest_ref_length(5, ref_lengths)
    assert r == 8 and metrics.brevity_penalty(5, r) == pytest.approx(0.5488, abs=1e-4)
    assert metrics.bleu(["a b c d e"], [["a b c d e f g h", "a b c d e f g h i j k l"]], max_n=1)[0] \
        == pytest.approx(metrics.brevity_penalty(5, 8))


def test_quiz_8_3_claim_holds_for_cider_d():
    refs = ["a brown dog runs on the grass", "a dog running outside", "the dog plays in a field"]
    for hyp in [refs[0], "a dog runs on the grass", "two cats sleep"]:
        mean, per_image = metrics.cider_d([hyp], [refs])
        assert mean == 0.0 and per_image == [0.0]
    # with a second image the same copy of a reference scores well above 0
    mean, per_image = metrics.cider_d([refs[0], "a red car"], [refs, ["a red car parked", "a car on a street"]])
    assert per_image[0] > 1.0


def test_quiz_8_3_docstring_lists_the_options():
    doc = re.sub(r"\s+", " ", nb08.check_quiz_8_3.__doc__)
    for letter, text in nb08.QUIZ_8_3.items():
        assert f"{letter}) {text}" in doc
    assert set(nb08.QUIZ_8_3) == {"a", "b", "c", "d"}
