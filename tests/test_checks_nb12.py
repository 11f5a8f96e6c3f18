"""Checks of notebook 12 (responsible multimodal ML): the references and independent solutions pass, every typical
mistake gets ✗ and its own hint, unattempted exercises are pending, and the check cases really show what they
claim (non-zero means and growing noise loudness that move the SNR, unevenly spaced levels, groups a split can
cut, captions where each CHAIR mistake changes the pair of numbers)."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from mmcourse import checks, hallucination, leakage, robustness
from mmcourse.checks import nb12
from checkhelp import verdict, stub


pytestmark = pytest.mark.usefixtures("lenient")

CHECKS = [nb12.check_mix_at_snr, nb12.check_relative_robustness, nb12.check_grouped_split, nb12.check_chair]


@pytest.mark.parametrize("check", CHECKS)
def test_unattempted_exercise_is_pending(capsys, check):
    out = verdict(check, stub, capsys)
    assert "pending" in out and "✗" not in out and out.count("pending") == 1, out
    assert "The notebook continues with mmcourse." in out, out


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")
    with pytest.raises(checks.CheckFailed, match="inverted"):
        nb12.check_mix_at_snr(lambda c, n, s: _learner_mix(c, n, s, "inverted"))
    with pytest.raises(checks.CheckFailed, match="plain mean"):
        nb12.check_relative_robustness(lambda x, y: float(np.mean(y)))
    with pytest.raises(checks.CheckFailed, match="ignores the groups"):
        nb12.check_grouped_split(lambda g, k, seed: leakage.random_folds(len(g), k, seed))
    with pytest.raises(checks.CheckFailed, match="swapped"):
        nb12.check_chair(lambda c, r: {"CHAIR_i": nb12.reference_chair(c, r)["CHAIR_s"],
                                       "CHAIR_s": nb12.reference_chair(c, r)["CHAIR_i"]})
    with pytest.raises(checks.CheckFailed, match="pending"):
        nb12.check_chair(stub)


# ---------------------------------------------------------------- 12.1 mix_at_snr

def _learner_mix(clean, noise, snr_db, mistake=None):
    """Noise mixing as a learner writes it (np.tile, then a gain from mean squares), with one mistake switched on."""
    n = len(clean)
    if mistake == "not tiled":
        seg = noise[:n]
    elif mistake == "zero padded":
        seg = np.pad(noise, (0, max(0, n - len(noise))))[:n]
    elif mistake == "cropped at the end":
        seg = np.tile(noise, n // len(noise) + 1)[-n:]
    elif mistake == "in place":
        seg = noise[:n] if len(noise) >= n else np.tile(noise, n // len(noise) + 1)[:n]
    else:
        seg = np.tile(noise, n // len(noise) + 1)[:n]
    pc, pn = np.mean(clean ** 2), np.mean(seg ** 2)
    if mistake == "whole noise":
        pn = np.mean(noise ** 2)
    if mistake == "std":
        pc, pn = np.std(clean) ** 2, np.std(seg) ** 2
    if mistake == "std of the noise":
        pn = np.var(seg)
    ratio = 10 ** (snr_db / 10)
    g = {"amplitude dB": np.sqrt(pc / (pn * 10 ** (snr_db / 20))),
         "amplitude dB on RMS": np.sqrt(pc / pn) / ratio,
         "inverted": np.sqrt(pc * ratio / pn),
         "no gain": 1.0}.get(mistake, np.sqrt(pc / (pn * ratio)))
    if mistake == "gain on clean":
        return np.sqrt(pn * ratio / pc) * clean + seg
    if mistake == "only noise":
        return g * seg
    if mistake == "in place":
        seg *= g
        return clean + seg
    out = clean + g * seg
    if mistake == "peak normalised":
        return out / np.abs(out).max()
    if mistake == "power normalised":
        return out / np.sqrt(np.mean(out ** 2))
    if mistake == "noise length":
        return np.resize(clean, len(noise)) + g * np.resize(seg, len(noise))
    if mistake == "no noise":
        return clean.copy()
    return out


def _torch_mix(clean, noise, snr_db):
    """With torch, in float32, noise repeated by index modulo its length."""
    import torch
    c, nz = torch.from_numpy(clean), torch.from_numpy(noise)
    seg = nz[torch.arange(len(c)) % len(nz)]
    g = torch.sqrt(c.pow(2).mean() / (seg.pow(2).mean() * 10 ** (snr_db / 10)))
    return c + g * seg


@pytest.mark.parametrize("solution", [nb12.reference_mix_at_snr, _learner_mix, _torch_mix,
                                      lambda c, n, s: c + np.resize(n, len(c)) * np.sqrt(robustness.power(c)) / (
                                          np.sqrt(robustness.power(np.resize(n, len(c)))) * 10 ** (s / 20))],
                         ids=["reference", "tile and mean squares", "torch float32", "amplitude form"])
def test_mix_at_snr_reference_and_independent_solutions_pass(capsys, solution):
    out = verdict(nb12.check_mix_at_snr, solution, capsys)
    assert out.count("✓") == 1 and "✗" not in out, out


def test_mix_cases_show_what_they_claim():
    lengths = {length for length, _, _ in nb12.MIX_CASES}
    assert min(lengths) < nb12.MIX_N == sorted(lengths)[1] < max(lengths)  # shorter, equal, longer noise
    assert nb12.MIX_N % min(lengths) != 0  # tiling also crops
    assert {s for _, s, _ in nb12.MIX_CASES} >= {20.0, 10.0, 0.0, -5.0}
    for length, snr, _ in nb12.MIX_CASES:
        clean, noise = nb12.mix_inputs(length)
        assert clean.dtype == noise.dtype == np.float32 and len(clean) == nb12.MIX_N and len(noise) == length
        assert abs(clean.mean()) > 0.2 and abs(noise.mean()) > 0.2  # std is not the RMS here
        assert abs(robustness.snr_db(clean, nb12.reference_mix_at_snr(clean, noise, snr)) - snr) < 1e-3
        assert abs(nb12.mix_variant_snr(clean, noise, snr, "right") - snr) < 1e-9
        # the mistakes with different hints land on SNRs far enough apart to tell, and off the request
        values = {}
        for how, hint in nb12.MIX_MISTAKES:
            v = nb12.mix_variant_snr(clean, noise, snr, how)
            if abs(v - snr) > nb12.SNR_TOL:
                assert abs(v - snr) > 3 * nb12.SNR_TOL, (how, length, snr)
                for other, (w, other_hint) in values.items():
                    assert other_hint == hint or abs(v - w) > 2 * nb12._MATCH_DB, (how, other, length, snr)
                values[how] = (v, hint)
        gain = nb12._mix_gain(clean, noise, snr, "right")
        assert abs(gain - 1) > 0.2 and abs(1 / gain - 1) > 0.2  # a gain on the clean signal shows
    # each mistake misses the request in some case
    for how, _ in nb12.MIX_MISTAKES:
        assert any(abs(nb12.mix_variant_snr(*nb12.mix_inputs(length), snr, how) - snr) > 3 * nb12.SNR_TOL
                   for length, snr, _ in nb12.MIX_CASES), how


@pytest.mark.parametrize("mistake, hint", [
    ("amplitude dB", "10·log10 of a POWER ratio"),
    ("amplitude dB on RMS", "10·log10 of a POWER ratio"),
    ("inverted", "the SNR is inverted"),
    ("gain on clean", "the gain goes on the noise, not on the clean signal"),
    ("not tiled", "repeated (tiled)"),
    ("zero padded", "Zero padding"),
    ("cropped at the end", "cropping from the end"),
    ("noise length", "the output has the noise's length"),
    ("peak normalised", "do not renormalise the mixture"),
    ("power normalised", "do not renormalise the mixture"),
    ("std", "not the variance"),
    ("std of the noise", "not the variance"),
    ("whole noise", "on the segment you add"),
    ("only noise", "you returned the scaled noise alone"),
    ("no gain", "scale the noise before adding it"),
    ("in place", "you changed clean or noise in place"),
    ("no noise", "add the scaled noise"),
])
def test_mix_at_snr_typical_mistakes(capsys, mistake, hint):
    out = verdict(nb12.check_mix_at_snr, lambda c, n, s: _learner_mix(c, n, s, mistake), capsys)
    assert "✗" in out and hint in out and out.count("✗") == 1, out


@pytest.mark.parametrize("wrong, hint", [
    (lambda c, n, s: None, "forget to `return`"),
    (lambda c, n, s: _learner_mix(c, n, s)[None], f"shape ({nb12.MIX_N},)"),
    (lambda c, n, s: _learner_mix(c, n, s) + 0.01 * np.sin(np.arange(len(c))), "not a multiple of that noise"),
    (lambda c, n, s: _learner_mix(c, n, s, "no gain") * np.nan, "NaN or inf"),
])
def test_mix_at_snr_wrong_returns(capsys, wrong, hint):
    out = verdict(nb12.check_mix_at_snr, wrong, capsys)
    assert "✗" in out and hint in out, out


# ---------------------------------------------------------------- 12.2 relative_robustness

def _learner_rr(levels, accuracies, mistake=None):
    """The normalised area as a learner writes it (a loop over intervals), with one mistake switched on."""
    x, y = list(levels), list(accuracies)
    if mistake == "clean dropped":
        x, y = x[1:], y[1:]
    if mistake == "unit steps":
        x = list(range(len(y)))
    area = 0.0
    for i in range(len(x) - 1):
        height = {"left": y[i], "right": y[i + 1]}.get(mistake, (y[i] + y[i + 1]) / 2)
        area += (x[i + 1] - x[i]) * height
    if mistake == "mean":
        return sum(y) / len(y)
    return {"not divided": area, "per point": area / len(x), "per interval": area / (len(x) - 1),
            "last level": area / x[-1]}.get(mistake, area / (x[-1] - x[0]))


@pytest.mark.parametrize("solution", [nb12.reference_relative_robustness, _learner_rr,
                                      lambda x, y: np.trapezoid(y, x) / (x[-1] - x[0]),
                                      lambda x, y: np.array([np.trapezoid(y, x) / np.ptp(x)])],
                         ids=["reference", "loop", "np.trapezoid", "one-element array"])
def test_relative_robustness_reference_and_independent_solutions_pass(capsys, solution):
    out = verdict(nb12.check_relative_robustness, solution, capsys)
    assert out.count("✓") == 1 and "✗" not in out, out


def test_rr_cases_show_what_they_claim():
    for levels, accs, _ in nb12.RR_CASES:
        steps = np.diff(levels)
        assert len(set(steps.tolist())) > 1 and levels[-1] - levels[0] != 1  # uneven, span not 1
        assert math.isclose(nb12.reference_relative_robustness(levels, accs),
                            np.trapezoid(accs, levels) / (levels[-1] - levels[0]))
    assert any(levels[0] != 0 for levels, _, _ in nb12.RR_CASES)  # dividing by the last level shows
    for how, _ in nb12.RR_MISTAKES:  # each mistake changes the answer in some case
        assert any(not math.isclose(nb12.rr_variant(x, y, how), nb12.reference_relative_robustness(x, y))
                   for x, y, _ in nb12.RR_CASES), how
    for x, y, _ in nb12.RR_CASES:  # and, where it does, differs from the mistakes with other hints
        want = nb12.reference_relative_robustness(x, y)
        seen = [(nb12.rr_variant(x, y, how), hint) for how, hint in nb12.RR_MISTAKES
                if not math.isclose(nb12.rr_variant(x, y, how), want)]
        for i, (v, hint) in enumerate(seen):
            assert all(h == hint or abs(v - w) > 1e-3 for w, h in seen[i + 1:])


@pytest.mark.parametrize("mistake, hint", [
    ("mean", "the plain mean of the accuracies"),
    ("not divided", "the area alone grows"),
    ("left", "a left Riemann sum"),
    ("right", "a right Riemann sum"),
    ("per point", "not by the number of points"),
    ("per interval", "not by the number of intervals"),
    ("clean dropped", "keep the clean (first) point"),
    ("unit steps", "use the levels as the x coordinates"),
    ("last level", "not by the last level"),
])
def test_relative_robustness_typical_mistakes(capsys, mistake, hint):
    out = verdict(nb12.check_relative_robustness, lambda x, y: _learner_rr(x, y, mistake), capsys)
    assert "✗" in out and hint in out and out.count("✗") == 1, out


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, y: _area_dropping_clean_over_full_span(x, y), "the first interval"),
    (lambda x, y: None, "return one float"),
    (lambda x, y: np.cumsum(y), "return one float"),
    (lambda x, y: (y.sort(), 0.5)[1], "without writing into them"),
    (lambda x, y: 0.5, "the trapezoid rule"),
])
def test_relative_robustness_wrong_returns(capsys, wrong, hint):
    out = verdict(nb12.check_relative_robustness, wrong, capsys)
    assert "✗" in out and hint in out, out


def _area_dropping_clean_over_full_span(x, y):
    return np.trapezoid(y[1:], x[1:]) / (x[-1] - x[0])


# ---------------------------------------------------------------- 12.3 grouped_split

def _learner_split(groups, n_folds, seed, mistake=None):
    """A grouped split as a learner writes it (shuffle the unique groups, deal them out), one mistake switched on."""
    rng = np.random.default_rng(None if mistake == "unseeded" else seed)
    if mistake == "random":
        return rng.integers(n_folds, size=len(groups))
    if mistake == "modulo":
        return np.arange(len(groups)) % n_folds
    unique, index = np.unique(groups, return_inverse=True)
    if mistake == "one group per fold":
        return index
    if mistake == "all in one fold":
        return np.zeros(len(groups), dtype=int)
    if mistake == "in place":
        rng.shuffle(groups)
        unique, index = np.unique(groups, return_inverse=True)
    order = np.arange(len(unique)) if mistake == "seed ignored" else rng.permutation(len(unique))
    fold_of_group = np.empty(len(unique), dtype=int)
    for k, u in enumerate(order):
        fold_of_group[u] = k % n_folds
    if mistake == "unbalanced":
        fold_of_group = np.minimum(order, n_folds - 1)  # one group in each fold but the last, which gets the rest
    folds = fold_of_group[index]
    if mistake == "index arrays":
        return [np.flatnonzero(folds == k) for k in range(n_folds)]
    if mistake == "one-based":
        return folds + 1
    return folds


def _greedy_split(groups, n_folds, seed):
    """Largest groups first, each to the currently smallest fold (ties broken by a seeded shuffle), as a list."""
    rng = np.random.default_rng(seed)
    unique, counts = np.unique(groups, return_counts=True)
    order = rng.permutation(len(unique))
    order = order[np.argsort(-counts[order], kind="stable")]
    sizes, fold_of = [0] * n_folds, {}
    for u in order:
        k = int(np.argmin(sizes))
        fold_of[unique[u]] = k
        sizes[k] += counts[u]
    return [fold_of[g] for g in groups]


@pytest.mark.parametrize("solution", [nb12.reference_grouped_split, _learner_split, _greedy_split,
                                      lambda g, k, s: _learner_split(g, k, s).astype(float)],
                         ids=["reference", "deal out", "greedy list", "float ids"])
def test_grouped_split_reference_and_independent_solutions_pass(capsys, solution):
    out = verdict(nb12.check_grouped_split, solution, capsys)
    assert out.count("✓") == 1 and "✗" not in out, out


def test_split_cases_show_what_they_claim():
    for case, n_folds, seed, _, balanced in nb12.SPLIT_CASES:
        groups = nb12.split_groups(case)
        unique = np.unique(groups)
        assert len(unique) >= n_folds
        folds = nb12.reference_grouped_split(groups, n_folds, seed)
        assert not leakage.crossing_groups(groups, folds) and set(folds.tolist()) == set(range(n_folds))
        assert leakage.crossing_groups(groups, np.arange(len(groups)) % n_folds)  # modulo cuts groups
        assert leakage.crossing_groups(groups, leakage.random_folds(len(groups), n_folds, seed))
        assert len(unique) > n_folds or case == 1  # one fold per group leaves the range in case 0
        if balanced:
            sizes = np.bincount(folds)
            assert sizes.max() <= 2 * sizes.min()
            assert not np.array_equal(folds, nb12.reference_grouped_split(groups, n_folds, seed + 1))
            # examples of a group are not side by side (a contiguous split would cut groups too)
            assert any(groups[i] != groups[i + 1] and groups[i] in groups[i + 2:] for i in range(len(groups) - 2))
    groups = nb12.split_groups(0)
    assert len(groups) == 172 and len(np.unique(groups)) == 60
    _, counts = np.unique(groups, return_counts=True)
    assert counts.min() >= 2 and counts.max() <= 4  # 12 groups dealt to each fold: 24 to 48 examples, within 2x


@pytest.mark.parametrize("mistake, hint", [
    ("random", "the split ignores the groups"),
    ("modulo", "folds by example index"),
    ("one group per fold", "each group got its own fold"),
    ("all in one fold", "everything is in fold 0"),
    ("index arrays", "not the examples of each fold"),
    ("one-based", "fold ids start at 0"),
    ("in place", "you shuffled groups in place"),
    ("unseeded", "use the seed"),
    ("seed ignored", "the seed changes nothing"),
    ("unbalanced", "the folds are unbalanced"),
])
def test_grouped_split_typical_mistakes(capsys, mistake, hint):
    out = verdict(nb12.check_grouped_split, lambda g, k, s: _learner_split(g, k, s, mistake), capsys)
    assert "✗" in out and hint in out and out.count("✗") == 1, out
    if mistake in ("random", "modulo"):  # the crossing groups are named
        assert re.search(r"\d+ of 60 groups in more than one fold \(e\.g\. spk\d\d", out), out


def test_grouped_split_random_fold_per_group_leaves_a_fold_empty(capsys):
    """Right with many groups, but in the 4-patient case a random fold per group leaves a fold empty."""
    def wrong(groups, n_folds, seed):
        unique, index = np.unique(groups, return_inverse=True)
        if len(unique) > n_folds:
            return _learner_split(groups, n_folds, seed)
        return np.array([0, 1, 1, 3])[index]
    out = verdict(nb12.check_grouped_split, wrong, capsys)
    assert "✗" in out and "fold(s) [2] empty" in out and "drawing a random fold per group" in out, out


@pytest.mark.parametrize("wrong, hint", [
    (lambda g, k, s: None, "forget to `return`"),
    (lambda g, k, s: _learner_split(g, k, s)[:-1], "one integer fold id per example"),
    (lambda g, k, s: [str(f) for f in _learner_split(g, k, s)], "one integer fold id per example"),
    (lambda g, k, s: _learner_split(g, k, s) + 0.5, "whole numbers"),
])
def test_grouped_split_wrong_returns(capsys, wrong, hint):
    out = verdict(nb12.check_grouped_split, wrong, capsys)
    assert "✗" in out and hint in out, out


# ---------------------------------------------------------------- 12.4 chair

_WORDS = {obj: re.compile(rf"\b(?:{w})\b", re.IGNORECASE) for obj, w in hallucination.OBJECTS.items()}


def _learner_chair(captions, refs, mistake=None):
    """CHAIR as a learner writes it (objects_in per caption, sets), with one mistake switched on."""
    def named(text):
        if mistake == "substring":
            return {o for o in hallucination.OBJECTS if o in text.lower()}
        return hallucination.objects_in(text)

    mentions = bad = bad_captions = with_objects = 0
    for caption, ref in zip(captions, refs):
        objs = named(caption)
        present = set()
        for r in (ref[:1] if mistake == "first reference" else ref):
            present |= named(r)
        wrong = objs - present
        if mistake == "multiplicity":
            mentions += sum(len(_WORDS[o].findall(caption)) for o in objs)
        else:
            mentions += len(objs)
        bad += len(wrong)
        bad_captions += 1 if wrong else 0
        with_objects += 1 if objs else 0
    n = len(captions)
    ci = bad / (n if mistake == "i per caption" else mentions)
    cs = {"s per mention": bad_captions / mentions, "s counts hallucinations": bad / n,
          "s without objectless captions": bad_captions / with_objects}.get(mistake, bad_captions / n)
    if mistake == "swapped":
        ci, cs = cs, ci
    if mistake == "percent":
        ci, cs = 100 * ci, 100 * cs
    return {"CHAIR_i": ci, "CHAIR_s": cs}


@pytest.mark.parametrize("solution", [nb12.reference_chair, _learner_chair, hallucination.chair,
                                      lambda c, r: {k: np.float32(v) for k, v in _learner_chair(c, r).items()}],
                         ids=["reference", "sets", "library dict with extra keys", "numpy numbers"])
def test_chair_reference_and_independent_solutions_pass(capsys, solution):
    out = verdict(nb12.check_chair, solution, capsys)
    assert out.count("✓") == 1 and "✗" not in out, out


def test_chair_cases_show_what_they_claim():
    caps, refs = nb12.CHAIR_CAPTIONS, nb12.CHAIR_REFS
    objs = hallucination.objects_in
    assert len(_WORDS["dog"].findall(caps[0])) == 2  # an object named twice
    assert objs(caps[1]) <= objs(refs[1][1]) and not objs(caps[1]) & objs(refs[1][0])  # only the 2nd reference
    assert objs(caps[2]) == set()  # a caption naming no object
    assert len(objs(caps[3]) - set().union(*map(objs, refs[3]))) == 2  # two hallucinations in one caption
    assert "hotdog" in caps[4] and "dog" not in objs(caps[4])  # the substring trap
    lib = hallucination.chair(caps, refs)
    want = nb12.chair_variant(caps, refs, "right")
    assert want == (lib["CHAIR_i"], lib["CHAIR_s"])
    pairs = [nb12.chair_variant(caps, refs, how) for how, _ in nb12.CHAIR_MISTAKES]
    for i, p in enumerate(pairs):  # every mistake gives its own pair, off the right one
        assert not all(math.isclose(a, b) for a, b in zip(p, want))
        assert all(not all(math.isclose(a, b) for a, b in zip(p, q)) for q in pairs[i + 1:])


@pytest.mark.parametrize("mistake, hint", [
    ("multiplicity", "each caption's objects are a SET"),
    ("i per caption", "CHAIR_i is per object"),
    ("s per mention", "CHAIR_s is per caption"),
    ("s counts hallucinations", "counts a CAPTION once"),
    ("s without objectless captions", "also one that names no object"),
    ("first reference", "ANY of its reference captions"),
    ("swapped", "CHAIR_i and CHAIR_s are swapped"),
    ("percent", "not percentages"),
    ("substring", "match whole words, not substrings"),
])
def test_chair_typical_mistakes(capsys, mistake, hint):
    out = verdict(nb12.check_chair, lambda c, r: _learner_chair(c, r, mistake), capsys)
    assert "✗" in out and hint in out and out.count("✗") == 1, out


@pytest.mark.parametrize("wrong, hint", [
    (lambda c, r: (1 / 3, 0.4), "return {'CHAIR_i'"),
    (lambda c, r: {"chair_i": 1 / 3, "chair_s": 0.4}, "return {'CHAIR_i'"),
    (lambda c, r: (c.append("x"), nb12.reference_chair(c[:-1], r))[1], "without writing into the lists"),
    (lambda c, r: {"CHAIR_i": 0.25, "CHAIR_s": 0.4}, "the union of objects_in(r)"),
    # both divided by the number of captions: the CHAIR_i mistake is named first
    (lambda c, r: {"CHAIR_i": 0.6, "CHAIR_s": 0.6}, "CHAIR_i is per object"),
])
def test_chair_wrong_returns(capsys, wrong, hint):
    out = verdict(nb12.check_chair, wrong, capsys)
    assert "✗" in out and hint in out, out
