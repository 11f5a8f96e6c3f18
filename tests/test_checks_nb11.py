"""Checks of notebook 11 (the capstone multimodal LLM): the references and independent solutions pass, every
typical mistake gets ✗ and its own hint, unattempted exercises are pending, and the check cases really show
what they claim (examples missing a modality, clips of different lengths, frequencies a shared draw cannot
match, tasks where clipping and signs matter)."""
from __future__ import annotations

import math
import random

import pytest
import torch

from mmcourse import checks, mllm
from mmcourse.checks import nb11
from checkhelp import verdict, stub


pytestmark = pytest.mark.usefixtures("lenient")

IMG, AUD = mllm.PLACEHOLDER["image"], mllm.PLACEHOLDER["audio"]


@pytest.mark.parametrize("check", [nb11.check_merge_two, nb11.check_dropout_example, nb11.check_multimodal_gain])
def test_unattempted_exercise_is_pending(capsys, check):
    out = verdict(check, stub, capsys)
    assert "pending" in out and "✗" not in out and out.count("pending") == 1, out


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")
    with pytest.raises(checks.CheckFailed, match="swapped"):
        nb11.check_merge_two(lambda e, i, im, au: _learner_merge(e, i, im, au, "swapped"))
    with pytest.raises(checks.CheckFailed, match="never drop all"):
        nb11.check_dropout_example(lambda ex, p, g: _learner_dropout(ex, p, g, "all dropped"))
    with pytest.raises(checks.CheckFailed, match="clip the leakage"):
        nb11.check_multimodal_gain(lambda s: {t: {"gain": v["model"] - v["blind"], "leakage": v["blind"] - v["base"]}
                                              for t, v in s.items()})
    with pytest.raises(checks.CheckFailed, match="pending"):
        nb11.check_merge_two(stub)


# ---------------------------------------------------------------- 11.1 merge_two

def _learner_merge(embeds, input_ids, image, audio, mistake=None):
    """The merge as a learner writes it (a loop over examples, counting those with each modality), with one
    mistake switched on."""
    out = embeds if mistake == "in place" else embeds.clone()
    clips = list(audio)[::-1] if mistake == "clips reversed" else list(audio)
    if mistake == "clip tokens reversed":
        clips = [c.flip(0) for c in clips]
    if mistake == "stacked clips":
        clips = torch.stack(clips)
    images = image.flip(0) if mistake == "images reversed" else image
    img_id, aud_id = (AUD, IMG) if mistake == "swapped" else (IMG, AUD)
    k_img = k_aud = 0
    for b in range(input_ids.shape[0]):
        at_img = (input_ids[b] == img_id).nonzero().squeeze(-1)
        at_aud = (input_ids[b] == aud_id).nonzero().squeeze(-1)
        if len(at_img) and mistake != "only audio":
            out[b, at_img] = images[b if mistake == "batch index" else k_img]
            k_img += 1
        if len(at_aud) and mistake != "only image":
            out[b, at_aud] = clips[b if mistake == "batch index" else k_aud]
            k_aud += 1
    return embeds if mistake == "unchanged" else out


def _vectorised_merge(embeds, input_ids, image, audio, mistake=None):
    """All tokens of a modality at once, with boolean masks."""
    out = embeds.clone()
    out[input_ids == IMG] = image.reshape(-1, image.shape[-1])
    flat = torch.cat(list(audio))
    out[input_ids == AUD] = flat.flip(0) if mistake == "all audio reversed" else flat
    return out


@pytest.mark.parametrize("solution", [nb11.reference_merge_two, _learner_merge, _vectorised_merge,
                                      lambda e, i, im, au: _vectorised_merge(e, i, im, au).numpy()],
                         ids=["reference", "loop", "masks", "numpy"])
def test_merge_two_reference_and_independent_solutions_pass(capsys, solution):
    out = verdict(nb11.check_merge_two, solution, capsys)
    assert out.count("✓") == 1 and "✗" not in out, out


def test_merge_cases_show_what_they_claim():
    for case in range(len(nb11.MERGE_CASES)):
        embeds, ids, image, audio = nb11.merge_inputs(case)
        want = nb11.reference_merge_two(embeds, ids, image, audio)
        assert not bool((ids[:, 0] < 0).any())  # no row starts with a placeholder
        assert torch.equal(want[ids >= 0], embeds[ids >= 0])
        assert torch.equal(want[ids == AUD], torch.cat(audio)) and torch.equal(want[ids == IMG], image.reshape(-1, 3))
    # case 0: every mistake of MERGE_MISTAKES gives its own value, different from the right one
    embeds, ids, image, audio = nb11.merge_inputs(0)
    want = nb11.reference_merge_two(embeds, ids, image, audio)
    values = [nb11._merge_variant(embeds, ids, image, audio, how) for how, _ in nb11.MERGE_MISTAKES]
    assert all(v is not None for v in values)
    for i, v in enumerate(values):
        assert v.shape == want.shape and not torch.allclose(v, want)
        assert all(not torch.allclose(v, w) for w in values[i + 1:])
    # case 1: example 0 audio only, 1 both, 2 image only; clips of different lengths
    embeds, ids, image, audio = nb11.merge_inputs(1)
    has_img, has_aud = (ids == IMG).any(dim=1).tolist(), (ids == AUD).any(dim=1).tolist()
    assert has_img == [False, True, True] and has_aud == [True, True, False]
    assert len({a.shape[0] for a in audio}) == len(audio) == 2 and image.shape[0] == 2
    with pytest.raises(IndexError):  # image by batch index runs out of rows
        _learner_merge(embeds, ids, image, audio, "batch index")


@pytest.mark.parametrize("mistake, hint", [
    ("in place", "wrote into embeds in place"),
    ("swapped", "image and audio are swapped"),
    ("batch index", "features picked by batch index"),
    ("clips reversed", "clips are in reverse order"),
    ("clip tokens reversed", "each clip's tokens are reversed"),
    ("images reversed", "images are in reverse order"),
    ("only image", "only the image was written"),
    ("only audio", "only the audio was written"),
    ("unchanged", "returned embeds as they were"),
    ("stacked clips", "not torch.stack"),
])
def test_merge_two_typical_mistakes(capsys, mistake, hint):
    out = verdict(nb11.check_merge_two, lambda e, i, im, au: _learner_merge(e, i, im, au, mistake), capsys)
    assert "✗" in out and hint in out and out.count("✗") == 1, out


@pytest.mark.parametrize("wrong, hint", [
    (lambda e, i, im, au: _vectorised_merge(e, i, im, au, "all audio reversed"), "audio tokens are reversed"),
    (lambda e, i, im, au: None, "forget to `return`"),
    (lambda e, i, im, au: nb11.reference_merge_two(e, i, im, au)[:, 1:], "(B, L, d)"),
    (lambda e, i, im, au: [][0], "list index out of range"),  # an IndexError in case 0 is no batch-index mistake
])
def test_merge_two_wrong_returns(capsys, wrong, hint):
    out = verdict(nb11.check_merge_two, wrong, capsys)
    assert "✗" in out and hint in out, out
    if hint == "list index out of range":
        assert "batch index" not in out, out


# ---------------------------------------------------------------- 11.2 dropout_example

def _learner_dropout(ex, p, generator, mistake=None, rng=None):
    """Modality dropout as a learner writes it (a coin per modality, string replace), with one mistake switched on;
    ``rng`` (a random.Random) draws instead of the torch generator."""
    present = sorted(ex["features"])

    def coin():
        return (rng.random() if rng is not None else float(torch.rand((), generator=generator))) < p

    def pick(options):
        return options[rng.randrange(len(options)) if rng is not None else
                       int(torch.randint(len(options), (1,), generator=generator))]

    if mistake == "shared coin":
        drop = set(present) if coin() else set()
    elif mistake == "always one":
        drop = {pick(present)}
    elif mistake == "never":
        drop = set()
    elif mistake == "greater than":
        drop = {m for m in present if float(torch.rand((), generator=generator)) > p}
    else:
        drop = {m for m in present if coin()}
    if drop == set(present) and mistake != "all dropped":
        drop.discard(present[0] if mistake == "keep first" else pick(present))
    if mistake == "mutated":
        for m in drop:
            del ex["features"][m]
            ex["prompt"] = ex["prompt"].replace(mllm.MARKER[m], "")
        return ex
    prompt, feats = ex["prompt"], dict(ex["features"])
    for m in drop:
        if mistake != "marker left":
            prompt = prompt.replace(mllm.MARKER[m], "")
            if mistake == "tidy":
                prompt = " ".join(prompt.split())
        if mistake == "zeroed":
            feats[m] = torch.zeros_like(feats[m])
        elif mistake == "none":
            feats[m] = None
        elif mistake != "features left":
            del feats[m]
    return {"prompt": prompt, "answer": "" if mistake == "answer" else ex["answer"], "features": feats}


@pytest.mark.parametrize("solution", [
    nb11.reference_dropout_example,
    _learner_dropout,
    lambda ex, p, g: _learner_dropout(ex, p, g, "tidy"),  # the double space a marker leaves tidied
    "python random",
], ids=["reference", "coins and replace", "whitespace tidied", "python random"])
def test_dropout_example_reference_and_independent_solutions_pass(capsys, solution):
    if solution == "python random":  # Python's random instead of the generator is fine
        rng = random.Random(5)
        solution = lambda ex, p, g: _learner_dropout(ex, p, g, rng=rng)  # noqa: E731
    out = verdict(nb11.check_dropout_example, solution, capsys)
    assert out.count("✓") == 1 and "✗" not in out, out


def test_dropout_cases_show_what_they_claim():
    exs = nb11.dropout_examples()
    assert sorted(exs["both"]["features"]) == ["audio", "image"]
    assert all(not (f == 0).any() for ex in exs.values() for f in ex["features"].values())  # zeroing shows
    assert not exs["both"]["prompt"].startswith("<")  # a marker in mid-prompt
    want = nb11.dropout_frequencies(0.5)
    assert want == {"keep both": 0.25, "drop image only": 0.375, "drop audio only": 0.375}
    # the tolerance is over 4 standard deviations of every frequency checked
    n, tol = nb11.FREQ_DRAWS, nb11.FREQ_TOL
    assert tol > 4 * max(math.sqrt(q * (1 - q) / n) for q in [0.5, *want.values()])
    # one draw for both modalities (then keeping one) is further than the tolerance from the right frequencies
    assert abs((1 - 0.5) - want["keep both"]) > 2 * tol
    # the library's rule lands inside the tolerance with the check's generator (what the check sees)
    g = torch.Generator().manual_seed(0)
    draws = [tuple(mllm.drop_modalities(["audio", "image"], 0.5, g)) for _ in range(n)]
    assert abs(draws.count(()) / n - 0.25) < tol and abs(draws.count(("image",)) / n - 0.375) < tol
    ex = exs["both"]
    out = nb11.reference_dropout_example(ex, 1.0, torch.Generator().manual_seed(1))
    assert len(out["features"]) == 1 and out["answer"] == ex["answer"] and len(ex["features"]) == 2
    gone = "audio" if "image" in out["features"] else "image"
    assert mllm.MARKER[gone] not in out["prompt"] and mllm.MARKER[gone] in ex["prompt"]


@pytest.mark.parametrize("mistake, hint", [
    ("marker left", "drop the marker and the features together"),
    ("features left", "Remove the marker only of a DROPPED modality"),
    ("all dropped", "never drop all modalities"),
    ("zeroed", "do not zero it"),
    ("none", "not set to None"),
    ("mutated", "you changed the caller's example"),
    ("always one", "with p = 0 nothing is dropped"),
    ("greater than", "comparing with > p"),
    ("never", "Keeping both means p was ignored"),
    ("keep first", "not always the same one"),
    ("shared coin", "give each modality its own draw"),
    ("answer", "leave the answer as it is"),
])
def test_dropout_example_typical_mistakes(capsys, mistake, hint):
    out = verdict(nb11.check_dropout_example, lambda ex, p, g: _learner_dropout(ex, p, g, mistake), capsys)
    assert "✗" in out and hint in out and out.count("✗") == 1, out


def _never_exactly_one(ex, p, g):
    """Right at p = 0 and p = 1, but at 0 < p < 1 both go together or neither (then one comes back if all went)."""
    if p in (0.0, 1.0):
        return nb11.reference_dropout_example(ex, p, g)
    return dict(ex, features=dict(ex["features"]))


def _wrong_rate(ex, p, g):
    """Right but for the rate: each modality dropped with probability p / 3."""
    return nb11.reference_dropout_example(ex, p if p in (0.0, 1.0) else p / 3, g)


@pytest.mark.parametrize("wrong, hint", [
    (_never_exactly_one, "Exactly one modality was never dropped"),
    (_wrong_rate, "independently: both kept (1 - p)² = 0.25"),
    (lambda ex, p, g: (ex["prompt"], ex["features"]), "return the example"),
    (lambda ex, p, g: dict(ex, prompt=ex["prompt"] + " Answer briefly."), "the rest of the prompt stays"),
])
def test_dropout_example_wrong_returns(capsys, wrong, hint):
    out = verdict(nb11.check_dropout_example, wrong, capsys)
    assert "✗" in out and hint in out, out


# ---------------------------------------------------------------- 11.3 multimodal_gain

def _learner_gain(scores, mistake=None):
    """The gain table as a learner writes it, with one mistake switched on."""
    out = {}
    for task, s in scores.items():
        gain = {"flipped": s["blind"] - s["model"], "clipped": max(0.0, s["model"] - s["blind"]),
                "gain vs base": s["model"] - s["base"]}.get(mistake, s["model"] - s["blind"])
        leakage = {"unclipped": s["blind"] - s["base"], "leakage from model": s["model"] - s["base"],
                   "leakage from model clipped": max(0.0, s["model"] - s["base"]),
                   "leakage flipped": max(0.0, s["base"] - s["blind"])}.get(mistake, max(0.0, s["blind"] - s["base"]))
        if mistake == "percent":
            gain, leakage = 100 * gain, 100 * leakage
        if mistake == "in scores":
            s["gain"] = gain
        out[task] = {"gain": gain, "leakage": leakage}
    return out


@pytest.mark.parametrize("solution", [nb11.reference_multimodal_gain, _learner_gain,
                                      lambda s: {t: {"gain": torch.tensor(v["model"] - v["blind"]),
                                                     "leakage": torch.tensor(v["blind"] - v["base"]).clamp(min=0)}
                                                 for t, v in s.items()}],
                         ids=["reference", "loop", "tensors"])
def test_multimodal_gain_reference_and_independent_solutions_pass(capsys, solution):
    out = verdict(nb11.check_multimodal_gain, solution, capsys)
    assert out.count("✓") == 1 and "✗" not in out, out


def test_gain_cases_show_what_they_claim():
    scores = nb11.GAIN_SCORES
    want = nb11.reference_multimodal_gain(scores)
    assert any(s["blind"] < s["base"] for s in scores.values())  # leakage clipped at 0
    assert any(w["gain"] < 0 for w in want.values())  # a negative gain
    assert all(0 <= v <= 1 for s in scores.values() for v in s.values())
    for quantity, how, _ in nb11.GAIN_MISTAKES:  # each mistake changes the answer of some task
        variant = nb11._gain_variant if quantity == "gain" else nb11._leakage_variant
        assert any(not math.isclose(variant(s, how), want[t][quantity], abs_tol=1e-6) for t, s in scores.items()), how
    for quantity in ("gain", "leakage"):  # and the mistakes of one quantity differ from each other
        variant = nb11._gain_variant if quantity == "gain" else nb11._leakage_variant
        hows = [how for q, how, _ in nb11.GAIN_MISTAKES if q == quantity]
        vectors = [tuple(round(variant(s, how), 9) for s in scores.values()) for how in hows]
        assert len(set(vectors)) == len(vectors)


@pytest.mark.parametrize("mistake, hint", [
    ("flipped", "the gain's sign is flipped"),
    ("clipped", "do not clip the gain at 0"),
    ("gain vs base", "model - base mixes"),
    ("unclipped", "clip the leakage at 0"),
    ("leakage from model", "about the BLIND model"),
    ("leakage from model clipped", "about the BLIND model"),
    ("leakage flipped", "the leakage's sign is flipped"),
    ("percent", "do not multiply by 100"),
    ("in scores", "writing into scores"),
])
def test_multimodal_gain_typical_mistakes(capsys, mistake, hint):
    out = verdict(nb11.check_multimodal_gain, lambda s: _learner_gain(s, mistake), capsys)
    assert "✗" in out and hint in out, out


@pytest.mark.parametrize("wrong, hint", [
    (lambda s: [v["model"] - v["blind"] for v in s.values()], "one entry per task"),
    (lambda s: {t: v["model"] - v["blind"] for t, v in s.items()}, "one entry per task"),
    (lambda s: {t: {"gain": v["model"] - v["blind"], "leakage": 0.0} for t, v in s.items()},
     "leakage = max(0, blind - base)"),
])
def test_multimodal_gain_wrong_returns(capsys, wrong, hint):
    out = verdict(nb11.check_multimodal_gain, wrong, capsys)
    assert "✗" in out and hint in out, out


# ---------------------------------------------------------------- quizzes

@pytest.mark.parametrize("check, right, wrong, explains", [
    (nb11.check_quiz_11_1, 78, 266, "before stacking"),
    (nb11.check_quiz_11_1, 78, 111, "7 × 7 grid cells"),
    (nb11.check_quiz_11_1, 78, 299, "before the projectors reduce them"),
    (nb11.check_quiz_11_1, 78, 28.5, "ONE second"),
    (nb11.check_quiz_11_1, 78, 62, "the clip alone"),
    (nb11.check_quiz_11_1, 78, 16, "the image alone"),
    (nb11.check_quiz_11_1, 78, 66, "not 4"),
    (nb11.check_quiz_11_1, 78, 80, "16 + 62 = 78"),
    (nb11.check_quiz_11_2, 0.5, 50, "not 50"),
    (nb11.check_quiz_11_2, 0.5, 1.0, "cannot tell whether the pair matches"),
    (nb11.check_quiz_11_2, 0.5, 0.25, "two answers"),
    (nb11.check_quiz_11_2, 0.5, 0.75, "a fair coin"),
])
def test_quizzes(quiz_behaviour, check, right, wrong, explains):
    quiz_behaviour(check, right, wrong, explains)


def test_quiz_answers_computed():
    projector = mllm.GridProjector(8, 8)
    assert projector.n_tokens == 16 and projector(torch.zeros(1, 49, 8)).shape == (1, 16, 8)
    frames = 5 * 50  # Whisper: 50 frames per second
    audio_tokens = mllm.stack_frames(torch.zeros(1, frames, 4), 4).shape[1]
    assert audio_tokens == 62 and projector.n_tokens + audio_tokens == 78
