"""Checks of notebook 04: the references pass, at least two typical wrong answers per exercise
get ✗ with a specific hint, unattempted exercises are pending, strict mode raises."""
import pytest
import torch
import torch.nn.functional as F

from mmcourse import alignment, checks, losses
from mmcourse.checks import nb04


def _stub(*args):
    raise NotImplementedError


def _ce(logits):
    return F.cross_entropy(logits, torch.arange(logits.shape[0]))


def _cos(a, b):
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


# ---- the references pass, stubs are pending ------------------------------------------------

@pytest.mark.parametrize("check, ref, n_ok", [
    (nb04.check_cosine_similarity, alignment.cosine_similarity_matrix, 1),
    (nb04.check_clip_loss, losses.clip_loss, 2),
    (nb04.check_recall_at_k, alignment.recall_at_k, 2),
    (nb04.check_zero_shot_classify, alignment.zero_shot_classify, 1),
])
def test_reference_passes_and_stub_is_pending(lenient, capsys, check, ref, n_ok):
    check(ref)
    out = capsys.readouterr().out
    assert out.count("✓") == n_ok and "✗" not in out, out
    check(_stub)
    out = capsys.readouterr().out
    assert "pending" in out and "✗" not in out


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")
    with pytest.raises(checks.CheckFailed, match="forgot to normalise"):
        nb04.check_cosine_similarity(lambda a, b: a @ b.T)
    with pytest.raises(checks.CheckFailed, match="pending"):
        nb04.check_clip_loss(_stub)


def test_a_crashing_answer_is_a_verdict_not_a_traceback(lenient, capsys):
    nb04.check_recall_at_k(lambda s, m, k: 1 / 0)
    assert "ZeroDivisionError" in capsys.readouterr().out


# ---- exercise 4.1 --------------------------------------------------------------------------

@pytest.mark.parametrize("wrong, hint", [
    (lambda a, b: a @ b.T, "forgot to normalise"),
    (lambda a, b: F.normalize(a, dim=0) @ F.normalize(b, dim=0).T, "wrong axis"),
    (lambda a, b: F.normalize(a, dim=-1) @ b.T, "only a was normalised"),
    (lambda a, b: a @ b.T / (a.norm() * b.norm()), "norms of its own two rows"),
    (lambda a, b: _cos(b, a), "not b @ a.T"),
])
def test_cosine_similarity_mistakes(lenient, capsys, wrong, hint):
    nb04.check_cosine_similarity(wrong)
    out = capsys.readouterr().out
    assert "✗" in out and hint in out, out


# ---- exercise 4.2 --------------------------------------------------------------------------

@pytest.mark.parametrize("wrong, hint", [
    (lambda i, t, s: 0.5 * (_ce(s * i @ t.T) + _ce(s * t @ i.T)), "forgot to L2-normalise"),
    (lambda i, t, s: _ce(s * _cos(i, t)), "only the image→text direction"),
    (lambda i, t, s: _ce(s * _cos(t, i)), "only the text→image direction"),
    (lambda i, t, s: 0.5 * (_ce(_cos(i, t) / s) + _ce(_cos(t, i) / s)), "you divided"),
    (lambda i, t, s: _ce(s * _cos(i, t)) + _ce(s * _cos(t, i)), "not summed"),
    (lambda i, t, s: 0.5 * (_ce(_cos(i, t)) + _ce(_cos(t, i))), "multiplied by logit_scale"),
    (lambda i, t, s: torch.tensor(losses.clip_loss(i, t, s).item(), dtype=torch.float64), "stay in torch"),
    (lambda i, t, s: losses.clip_loss(i, t, s.detach()), "stay in torch"),
])
def test_clip_loss_mistakes(lenient, capsys, wrong, hint):
    nb04.check_clip_loss(wrong)
    out = capsys.readouterr().out
    assert "✗" in out and hint in out, out


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
def test_clip_loss_float_of_the_scale_names_requires_grad(lenient, capsys):
    nb04.check_clip_loss(lambda i, t, s: losses.clip_loss(i, t, float(s)))
    out = capsys.readouterr().out
    assert "✗" in out and "requires_grad=False" in out and "float(logit_scale)" in out, out


def test_clip_loss_detached_scale_inside_a_graph(lenient, capsys):
    # the loss still depends on the embeddings, but the temperature cannot learn
    def wrong(i, t, s):
        i = i.clone().requires_grad_(True)
        return losses.clip_loss(i, t, s.detach())
    nb04.check_clip_loss(wrong)
    out = capsys.readouterr().out
    assert "✗" in out and "learnable" in out, out


# ---- exercise 4.3 --------------------------------------------------------------------------

def _ranks_loop(sim, match):
    return torch.tensor(alignment.ranks(sim, match))


@pytest.mark.parametrize("wrong, hint", [
    (lambda s, m, k: float((_ranks_loop(s, m) < k).float().mean()), "top K−1"),
    (lambda s, m, k: float((_ranks_loop(s, m) <= k + 1).float().mean()), "top K+1"),
    (lambda s, m, k: float(m.gather(1, s.topk(k, dim=1, largest=False).indices).any(1).float().mean()), "least"),
    (lambda s, m, k: float((m.gather(1, s.topk(k, dim=1).indices).sum(1) / m.sum(1)).mean()), "at least one"),
    (lambda s, m, k: float(m.T.gather(1, s.T.topk(k, dim=1).indices).any(1).float().mean()), "wrong axis"),
    (lambda s, m, k: float((_ranks_loop(s, torch.eye(*s.shape, dtype=torch.bool)) <= k).float().mean()),
     "not on the diagonal"),
    (lambda s, m, k: int(m.gather(1, s.topk(k, dim=1).indices).any(1).sum()), "fraction of queries"),
])
def test_recall_mistakes(lenient, capsys, wrong, hint):
    nb04.check_recall_at_k(wrong)
    out = capsys.readouterr().out
    assert "✗" in out and hint in out, out


def test_recall_brute_force_answer_passes(lenient, capsys):
    def brute(sim, match, k):
        hits = 0
        for q in range(sim.shape[0]):
            order = sorted(range(sim.shape[1]), key=lambda c: -float(sim[q, c]))
            hits += any(bool(match[q, c]) for c in order[:k])
        return hits / sim.shape[0]
    nb04.check_recall_at_k(brute)
    out = capsys.readouterr().out
    assert out.count("✓") == 2 and "✗" not in out


# ---- exercise 4.4 --------------------------------------------------------------------------

@pytest.mark.parametrize("wrong, hint", [
    (lambda i, c: (i @ c.T).argmax(dim=1), "forgot to normalise"),
    (lambda i, c: _cos(i, c).argmax(dim=0), "wrong axis"),
    (lambda i, c: _cos(i, c).argmin(dim=1), "argmin"),
    (lambda i, c: _cos(i, c), "similarity matrix"),
])
def test_zero_shot_mistakes(lenient, capsys, wrong, hint):
    nb04.check_zero_shot_classify(wrong)
    out = capsys.readouterr().out
    assert "✗" in out and hint in out, out


def test_mistake_values_really_differ_from_the_answers():
    """A mistake that gives the right value on the check's inputs could never be caught."""
    a, b = nb04._cos_inputs()
    assert not torch.allclose(a @ b.T, alignment.cosine_similarity_matrix(a, b), atol=1e-3)
    i, c = nb04._zero_shot_inputs()
    assert not torch.equal((i @ c.T).argmax(1), alignment.zero_shot_classify(i, c))
    for sim, match in nb04.recall_cases():
        want = [alignment.recall_at_k(sim, match, k) for k in nb04.RECALL_KS]
        for kind in ("k-1", "k+1", "ascending", "diagonal", "count"):
            assert [nb04._recall_variant(sim, match, k, kind) for k in nb04.RECALL_KS] != want, kind


# ---- quizzes: the right answer passes strict, a wrong one is explained, unattempted is pending --------

@pytest.mark.parametrize("check, right, wrong, explained", [
    (nb04.check_quiz_4_1, 4.852, 5.545, "log 128"),
    (nb04.check_quiz_4_2, "b", "a", "rank 3"),
    (nb04.check_quiz_4_3, "b", "a", "maximum over 5 positives"),
])
def test_quizzes(quiz_behaviour, check, right, wrong, explained):
    quiz_behaviour(check, right, wrong, explained)
