"""Checks of notebook 10_audio_language: the references and independent solutions pass, every typical mistake
gets ✗ and its own hint, unattempted exercises are pending, and the check cases really show what they
claim (a remainder when stacking, an answer token that also occurs in the prompt, clips that can be told
apart, texts where each parsing mistake changes the answer)."""
from __future__ import annotations

import random
import re

import numpy as np
import pytest
import torch

from mmcourse import answers, checks, mllm
from mmcourse.checks import nb10
from mmcourse.mllm import IGNORE
from checkhelp import verdict, stub


pytestmark = pytest.mark.usefixtures("lenient")


@pytest.mark.parametrize("check", [nb10.check_stack_frames, nb10.check_answer_only_labels,
                                   nb10.check_shuffled_control, nb10.check_parse_answers])
def test_unattempted_exercise_is_pending(capsys, check):
    out = verdict(check, stub, capsys)
    assert "pending" in out and "✗" not in out and out.count("pending") == 1, out


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")
    with pytest.raises(checks.CheckFailed, match="wrong axis"):
        nb10.check_stack_frames(lambda x, k: _learner_stack(x, k, mistake="transposed first"))
    with pytest.raises(checks.CheckFailed, match="loss is on the prompt"):
        nb10.check_answer_only_labels(lambda p, a, e: (p + a + [e], p + a + [e]))
    with pytest.raises(checks.CheckFailed, match="leaks the true audio"):
        nb10.check_shuffled_control(lambda f, seed: list(f))


# ---------------------------------------------------------------- 10.1 stack_frames

def _learner_stack(x, k, mistake=None):
    """Frame stacking as a learner writes it (a loop over tokens and torch.cat), with one mistake switched on."""
    b, t, d = x.shape
    if mistake == "k = 4":
        k = 4
    n = t // k
    if mistake == "transposed first":
        return x[:, :n * k].transpose(1, 2).reshape(b, k * d, n).transpose(1, 2)
    if mistake == "zero padded":
        n = -(-t // k)
        x = torch.cat([x, torch.zeros(b, n * k - t, d)], dim=1)
    start = t - n * k if mistake == "first frames dropped" else 0
    tokens = []
    for i in range(n):
        if mistake == "strided":
            frames = [x[:, start + i + j * n] for j in range(k)]
        else:
            frames = [x[:, start + i * k + j] for j in range(k)]
        if mistake == "mean":
            tokens.append(torch.stack(frames).mean(dim=0))
        elif mistake == "features interleaved":
            tokens.append(torch.stack(frames, dim=-1).reshape(b, k * d))
        else:
            tokens.append(torch.cat(frames, dim=-1))
    out = torch.stack(tokens, dim=1)
    return out.transpose(1, 2) if mistake == "channels first" else out


@pytest.mark.parametrize("solution", [nb10.reference_stack_frames, _learner_stack,
                                      lambda x, k: x.numpy()[:, :x.shape[1] // k * k].reshape(
                                          x.shape[0], x.shape[1] // k, -1)],
                         ids=["reference", "loop and cat", "numpy"])
def test_stack_frames_reference_and_independent_solutions_pass(capsys, solution):
    out = verdict(nb10.check_stack_frames, solution, capsys)
    assert out.count("✓") == 1 and "✗" not in out, out


def test_stack_cases_show_what_they_claim():
    b, t, d, k, _ = nb10.STACK_CASES[0]
    assert t % k != 0  # the first case has a remainder: padding and dropping differ
    assert any(k2 != 4 for *_, k2, _ in nb10.STACK_CASES)  # a hard-coded 4 shows
    for b, t, d, k, _ in nb10.STACK_CASES:
        x = nb10.stack_input(b, t, d)
        want = mllm.stack_frames(x, k)
        assert torch.equal(want[:, 0], torch.cat([x[:, j] for j in range(k)], dim=-1))
        values = [nb10._stack_variant(x, k, how) for how, _ in nb10.STACK_MISTAKES
                  if t % k or how != "first frames dropped"]  # without a remainder, nothing is dropped
        for i, v in enumerate(values):  # same shape, different values: each mistake recognisable
            assert v.shape == want.shape and not torch.allclose(v, want)
            assert all(not torch.allclose(v, w) for w in values[i + 1:])
    b, t, d, k, _ = nb10.STACK_CASES[0]
    x = nb10.stack_input(b, t, d)
    shapes = [tuple(nb10._stack_variant(x, k, how).shape) for how, _ in nb10.STACK_SHAPE_MISTAKES[:3]]
    assert len(set(shapes)) == 3 and tuple(mllm.stack_frames(x, k).shape) not in shapes


@pytest.mark.parametrize("mistake, hint", [
    ("transposed first", "transposing to (B, d, T)"),
    ("strided", "CONSECUTIVE frames"),
    ("features interleaved", "interleaved them feature by feature"),
    ("first frames dropped", "drop the LAST"),
    ("mean", "do not average"),
    ("zero padded", "zero padding"),
    ("channels first", "the features last"),
    ("k = 4", "not a hard-coded 4"),
])
def test_stack_frames_typical_mistakes(capsys, mistake, hint):
    out = verdict(nb10.check_stack_frames, lambda x, k: _learner_stack(x, k, mistake=mistake), capsys)
    assert "✗" in out and hint in out, out


def test_stack_frames_brief_wrong_axis_formula_is_named(capsys):
    """The wrong-axis mistake exactly as written: x.transpose(1, 2).reshape(B, k*d, T//k).transpose(1, 2)."""
    def wrong(x, k):
        b, t, d = x.shape
        x = x[:, :t // k * k]
        return x.transpose(1, 2).reshape(b, k * d, t // k).transpose(1, 2)
    out = verdict(nb10.check_stack_frames, wrong, capsys)
    assert "✗" in out and "wrong axis" in out, out


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, k: None, "forget to `return`"),
    (lambda x, k: x.reshape(x.shape[0], x.shape[1] // k, k * x.shape[2]), "keep the first"),  # T % k frames kept
    (lambda x, k: mllm.stack_frames(x, k) * 2, "torch.cat"),
])
def test_stack_frames_wrong_returns(capsys, wrong, hint):
    out = verdict(nb10.check_stack_frames, wrong, capsys)
    assert "✗" in out and hint in out, out


# ---------------------------------------------------------------- 10.2 answer_only_labels

def _learner_labels(prompt_ids, answer_ids, eos_id, mistake=None):
    """The label mask as a learner writes it (copies and a loop), with one mistake switched on."""
    if mistake == "alias":
        input_ids = prompt_ids
        input_ids += answer_ids
        input_ids.append(eos_id)
        return input_ids, [IGNORE] * (len(input_ids) - len(answer_ids) - 1) + answer_ids + [eos_id]
    answer = list(answer_ids) + ([] if mistake in ("no eos", "eos only in labels", "eos unlabelled") else [eos_id])
    input_ids = list(prompt_ids) + answer
    labels = []
    for pos, tok in enumerate(input_ids):
        in_prompt = pos < len(prompt_ids)
        if mistake == "loss on prompt":
            labels.append(tok)
        elif mistake == "placeholders only":
            labels.append(IGNORE if tok < 0 else tok)
        elif mistake == "reversed":
            labels.append(tok if in_prompt else IGNORE)
        elif mistake == "by value":
            labels.append(IGNORE if tok in prompt_ids else tok)
        else:
            labels.append(IGNORE if in_prompt else tok)
    if mistake == "eos unlabelled":
        input_ids, labels = input_ids + [eos_id], labels + [IGNORE]
    if mistake == "eos only in labels":
        labels = labels + [eos_id]
    if mistake == "shifted":
        labels = labels[1:] + [IGNORE]
    if mistake == "teacher forcing":
        input_ids, labels = input_ids[:-1], labels[1:]
    if mistake == "eos 2":
        input_ids[-1], labels[-1] = 2, 2
    return input_ids, labels


@pytest.mark.parametrize("solution", [nb10.reference_answer_only_labels, _learner_labels,
                                      lambda p, a, e: (torch.tensor(p + a + [e]),
                                                       torch.tensor([IGNORE] * len(p) + a + [e]))],
                         ids=["reference", "loop", "tensors"])
def test_answer_only_labels_reference_and_independent_solutions_pass(capsys, solution):
    out = verdict(nb10.check_answer_only_labels, solution, capsys)
    assert out.count("✓") == 1 and "✗" not in out, out


def test_label_cases_show_what_they_claim():
    prompt, answer, eos, _ = nb10.LABEL_CASES[0]
    assert mllm.PLACEHOLDER["audio"] in prompt and set(answer) & set(prompt)  # masking by value shows
    assert any(e == 0 for *_, e, _ in nb10.LABEL_CASES)  # a falsy eos id
    for prompt, answer, eos, _ in nb10.LABEL_CASES:
        ids, labels = nb10.reference_answer_only_labels(prompt, answer, eos)
        assert ids == prompt + answer + [eos] and len(labels) == len(ids)
        assert labels[:len(prompt)] == [IGNORE] * len(prompt) and labels[len(prompt):] == answer + [eos]
        for bad_ids, bad_labels, _ in nb10.label_mistakes(prompt, answer, eos):
            assert bad_labels != labels or (bad_ids is not None and bad_ids != ids)


def test_answer_only_labels_agree_with_mllm_example():
    """The reference is what mllm.example builds from text (a whitespace tokenizer stands in for SmolLM2's)."""
    class Tok:
        eos_token_id = 2
        vocab = {"<|im_start|>": 5, "user": 6, "assistant": 7, "say": 8, "the": 9, "digit": 10, "seven": 11}

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return "<|im_start|> user " + messages[-1]["content"] + " <|im_start|> assistant"

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [self.vocab[w] for w in text.split()]}

    ex = mllm.example(Tok(), "<audio> say the digit", "seven", {"audio": 3})
    prompt = mllm.prompt_ids(Tok(), "<audio> say the digit", {"audio": 3})
    assert nb10.reference_answer_only_labels(prompt, [11], 2) == (ex["input_ids"], ex["labels"])


@pytest.mark.parametrize("mistake, hint", [
    ("loss on prompt", "loss is on the prompt too"),
    ("placeholders only", "not only on the audio placeholders"),
    ("no eos", "append eos_id"),
    ("eos unlabelled", "append eos_id"),
    ("eos only in labels", "append eos_id"),
    ("shifted", "do not shift"),
    ("teacher forcing", "do not shift"),
    ("reversed", "wrong way round"),
    ("by value", "mask by POSITION"),
    ("alias", "does not copy a list"),
    ("eos 2", "use the eos_id argument"),
])
def test_answer_only_labels_typical_mistakes(capsys, mistake, hint):
    out = verdict(nb10.check_answer_only_labels, lambda p, a, e: _learner_labels(p, a, e, mistake), capsys)
    assert "✗" in out and hint in out, out


@pytest.mark.parametrize("wrong, hint", [
    (lambda p, a, e: p + a + [e], "a pair (input_ids, labels)"),
    (lambda p, a, e: (p + a + [e], None), "two lists of ints"),
    (lambda p, a, e: (a + p + [e], [IGNORE] * len(p) + a + [e]), "in this order"),
    (lambda p, a, e: (p + a + [e], [IGNORE] * len(p) + a + [e, e]), "same length"),
    (lambda p, a, e: (p + a + [e], [IGNORE] * (len(p) + 1) + a[1:] + [e]), "labels = [-100] * len(prompt_ids)"),
])
def test_answer_only_labels_wrong_returns(capsys, wrong, hint):
    out = verdict(nb10.check_answer_only_labels, wrong, capsys)
    assert "✗" in out and hint in out, out


# ---------------------------------------------------------------- 10.3 shuffled_control

def _sattolo(features, seed):
    """An independent derangement: Sattolo's algorithm (a random cycle through all clips)."""
    rng = random.Random(seed)
    order = list(range(len(features)))
    for i in range(len(order) - 1, 0, -1):
        j = rng.randrange(i)
        order[i], order[j] = order[j], order[i]
    return [features[j] for j in order]


def _torch_derangement(features, seed):
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(features), generator=g)
        if (perm != torch.arange(len(features))).all():
            return [features[int(j)] for j in perm]


@pytest.mark.parametrize("solution", [nb10.reference_shuffled_control, _sattolo, _torch_derangement,
                                      lambda f, seed: [x.numpy() for x in _sattolo(f, seed)]],
                         ids=["reference", "sattolo", "torch randperm", "numpy arrays"])
def test_shuffled_control_reference_and_independent_solutions_pass(capsys, solution):
    out = verdict(nb10.check_shuffled_control, solution, capsys)
    assert out.count("✓") == 1 and "✗" not in out, out


def test_control_cases_show_what_they_claim():
    for n, seeds in nb10.CONTROL_CASES:
        feats = nb10.control_features(n)
        assert len({tuple(f.shape) for f in feats}) == n  # different lengths: each clip can be traced
        for seed in seeds:
            out = nb10.reference_shuffled_control(feats, seed)
            source = [next(j for j, f in enumerate(feats) if f is o) for o in out]
            assert sorted(source) == list(range(n)) and all(s != i for i, s in enumerate(source))
    # a plain random permutation keeps some clip in place for at least one seed of every case but N = 2's
    for n, seeds in nb10.CONTROL_CASES[:2]:
        assert any((np.random.default_rng(s).permutation(n) == np.arange(n)).any() for s in seeds)
    with pytest.raises(ValueError, match="at least 2 clips"):
        nb10.reference_shuffled_control([torch.zeros(2)], 0)


def _in_place(features, seed):
    random.Random(seed).shuffle(features)
    return features


@pytest.mark.parametrize("wrong, hint", [
    (lambda f, seed: list(f), "not a control"),  # identity
    (lambda f, seed: [f[int(j)] for j in np.random.default_rng(seed).permutation(len(f))], "kept their own"),
    (lambda f, seed: [f[int(j)] for j in torch.randperm(len(f), generator=torch.Generator().manual_seed(seed))],
     "kept their own"),
    (lambda f, seed: [torch.randn_like(x) for x in f], "REAL clips"),
    (lambda f, seed: [x + 0.01 * torch.randn_like(x) for x in _sattolo(f, seed)], "REAL clips"),
    (lambda f, seed: [torch.zeros_like(x) for x in f], "zeroed-audio control"),
    (lambda f, seed: [f[0]] * len(f), "same clip for all"),
    (lambda f, seed: [f[(seed % (len(f) - 1)) + 1]] * len(f), "same clip for all"),
    (lambda f, seed: [f[int(j)] for j in np.random.default_rng(seed).integers(0, len(f), len(f))],
     "without replacement"),
    (lambda f, seed: f[1:] + f[:1], "keeps neighbours together"),  # a derangement, but the seed is ignored
    (lambda f, seed: _sattolo(f, random.randrange(10 ** 6)), "same result for the same seed"),
    (_in_place, "changes the caller's list"),
    (lambda f, seed: torch.cat(f), "one features tensor per clip"),
    (lambda f, seed: _sattolo(f, seed)[:-1], "a list of"),
])
def test_shuffled_control_typical_mistakes(capsys, wrong, hint):
    out = verdict(nb10.check_shuffled_control, wrong, capsys)
    assert "✗" in out and hint in out, out
    assert out.count("✗") == 1, out


# ---------------------------------------------------------------- 10.4 parse_answers

def _learner_parse(texts, classes, mistake=None):
    """Parsing as a learner writes it (regular expressions, no mmcourse.answers), with one mistake switched on."""
    out = []
    for text in texts:
        t = text if mistake == "case-sensitive" else text.lower()
        if mistake == "substring":
            out.append(next((c for c in classes if c in t), None))
            continue
        if mistake != "punctuation":
            t = re.sub(r"[^\w\s]|_", " ", t)
        words = t.split()
        named = [c for c in classes if re.search(r"(^|\s)" + re.escape(c) + r"(\s|$)", " ".join(words))]
        first = [c for c in named if words[:len(c.split())] == c.split()]
        if mistake == "first word only":
            first = [c for c in classes if words[:1] == [c]]
        if mistake == "exact match":
            first = [c for c in classes if words == c.split()]
        answer = max(first, key=len) if first else None
        if answer is not None and len(set(named) - {answer}) > 0 and mistake != "two classes":
            answer = None
        if answer is None and mistake == "first class":
            answer = classes[0]
        if answer is None and mistake == "empty":
            answer = ""
        out.append(classes.index(answer) if mistake == "index" and answer is not None else answer)
    if mistake == "most common":
        common = max(set(a for a in out if a is not None), key=[a for a in out if a is not None].count)
        out = [common if a is None else a for a in out]
    return out


@pytest.mark.parametrize("solution", [nb10.reference_parse_answers, _learner_parse,
                                      lambda texts, classes: [answers.parse_answer(t, classes) for t in texts]],
                         ids=["reference", "regex", "answers.parse_answer"])
def test_parse_answers_reference_and_independent_solutions_pass(capsys, solution):
    out = verdict(nb10.check_parse_answers, solution, capsys)
    assert out.count("✓") == 1 and "✗" not in out, out


def test_parse_cases_show_what_they_claim():
    for cases, classes in nb10.PARSE_CASES:
        texts = [t for t, _ in cases]
        want = nb10.reference_parse_answers(texts, classes)
        assert None in want and len({w for w in want if w is not None}) > 2
    for how, _ in nb10.PARSE_MISTAKES:  # each mistake changes the answer of at least one case
        assert any(nb10._parse_variant([t for t, _ in cases], classes, how) !=
                   nb10.reference_parse_answers([t for t, _ in cases], classes)
                   for cases, classes in nb10.PARSE_CASES), how
    digits = [t for t, _ in nb10.PARSE_CASES[0][0]]
    assert nb10._parse_variant(digits, nb10.DIGITS, "substring")[digits.index("seventeen")] == "seven"
    assert nb10._parse_variant(digits, nb10.DIGITS, "substring")[digits.index("none")] == "one"


@pytest.mark.parametrize("mistake, hint", [
    ("substring", "a substring match"),
    ("case-sensitive", "case-sensitive"),
    ("punctuation", "punctuation is still attached"),
    ("first word only", "compared only the first word"),
    ("exact match", "an answer may go on"),
    ("two classes", "two different classes named"),
    ("first class", "mapped to the first class"),
    ("most common", "mapped to the most common class"),
    ("empty", "not an empty string"),
    ("index", "not its index"),
])
def test_parse_answers_typical_mistakes(capsys, mistake, hint):
    out = verdict(nb10.check_parse_answers, lambda texts, classes: _learner_parse(texts, classes, mistake), capsys)
    assert "✗" in out and hint in out, out


def test_parse_answers_unknown_mistake_gets_the_rule_of_the_first_wrong_text(capsys):
    def wrong(texts, classes):  # right everywhere but on "clock": no known mistake gives this
        want = nb10.reference_parse_answers(texts, classes)
        return ["clock tick" if t == "clock" else a for t, a in zip(texts, want)]
    out = verdict(nb10.check_parse_answers, wrong, capsys)
    assert "✗" in out and "part of a class is no class" in out, out


def test_parse_answers_a_partial_mistake_gets_its_hint(capsys):
    def wrong(texts, classes):  # right everywhere but on "rainy": explained by a substring match
        return ["rain" if t == "rainy" else a for t, a in zip(texts, nb10.reference_parse_answers(texts, classes))]
    out = verdict(nb10.check_parse_answers, wrong, capsys)
    assert "✗" in out and "a substring match" in out, out


@pytest.mark.parametrize("wrong, hint", [
    (lambda texts, classes: "seven", "one answer per text"),
    (lambda texts, classes: [None], "one answer per text"),
])
def test_parse_answers_wrong_returns(capsys, wrong, hint):
    out = verdict(nb10.check_parse_answers, wrong, capsys)
    assert "✗" in out and hint in out, out


# ---------------------------------------------------------------- quizzes

@pytest.mark.parametrize("check, right, wrong, explains", [
    (nb10.check_quiz_10_1, 12.5, 200, "DIVIDES"),
    (nb10.check_quiz_10_1, 12.5, 50, "rate before stacking"),
    (nb10.check_quiz_10_1, 12.5, 4, "4 is k"),
    (nb10.check_quiz_10_1, 12.5, 10, "50 / 4 = 12.5"),
    (nb10.check_quiz_10_2, "b", "a", "prior"),
    (nb10.check_quiz_10_2, "b", "c", "constant input"),
    (nb10.check_quiz_10_3, 375, 1500, "before stacking"),
    (nb10.check_quiz_10_3, 375, 6000, "DIVIDES"),
    (nb10.check_quiz_10_3, 375, 750, "halves them"),
    (nb10.check_quiz_10_3, 375, 12.5, "per SECOND"),
    (nb10.check_quiz_10_3, 375, 400, "1,500 / 4 = 375"),
])
def test_quizzes(quiz_behaviour, check, right, wrong, explains):
    quiz_behaviour(check, right, wrong, explains)


def test_quiz_answers_computed():
    sample_rate, hop, conv_stride = 16000, 160, 2  # Whisper: 10-ms mel hop, the encoder's stride-2 conv
    frames_per_s = sample_rate / hop / conv_stride
    assert frames_per_s == 50 and frames_per_s / 4 == 12.5
    assert 30 * frames_per_s // 4 == 375
    assert mllm.stack_frames(torch.zeros(1, 1500, 384), 4).shape == (1, 375, 4 * 384)


def test_quiz_10_2_docstring_lists_the_options():
    doc = re.sub(r"\s+", " ", nb10.check_quiz_10_2.__doc__)
    for letter, text in nb10.QUIZ_10_2.items():
        assert f"{letter}) {text}" in doc
    assert set(nb10.QUIZ_10_2) == {"a", "b", "c", "d"}
