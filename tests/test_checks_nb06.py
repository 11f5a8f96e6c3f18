"""Checks of notebook 06: the references pass, typical wrong answers get ✗ and a specific hint,
unattempted exercises are pending, and the golden values are what the reference computes."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmcourse import checks, losses
from mmcourse.checks import nb06


def _stub(*args):
    raise NotImplementedError


# ---- the references pass -----------------------------------------------------------------

@pytest.mark.parametrize("check, ref, n_ok", [
    (nb06.check_bce_grad_z, losses.bce_grad_z, 1),
    (nb06.check_fusion_head_backward, losses.fusion_head_backward, 7),
    (nb06.check_softmax_ce_grad, losses.softmax_ce_grad, 2),
    (nb06.check_infonce_grad, losses.infonce_grad, 1),
])
def test_reference_passes_and_stub_is_pending(lenient, capsys, check, ref, n_ok):
    check(ref)
    out = capsys.readouterr().out
    assert out.count("✓") == n_ok and "✗" not in out
    check(_stub)
    out = capsys.readouterr().out
    assert "pending" in out and "✗" not in out


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")
    with pytest.raises(checks.CheckFailed, match="sign error"):
        nb06.check_bce_grad_z(lambda dh, d: (d - dh) / len(d))
    with pytest.raises(checks.CheckFailed, match="pending"):
        nb06.check_infonce_grad(_stub)


# ---- golden values -------------------------------------------------------------------------

def test_golden_values_are_what_the_reference_and_autograd_compute(lenient, capsys):
    img, txt, params, d = nb06.golden_problem()
    z, cache = losses.fusion_head_forward(img, txt, params)
    loss = losses.bce_with_logits(z, d)
    grads = losses.fusion_head_backward(cache, losses.bce_grad_z(losses.sigmoid(z), d))
    assert loss == pytest.approx(nb06.GOLDEN_LOSS, rel=1e-12)
    assert nb06.grad_norm(grads) == pytest.approx(nb06.GOLDEN_GRAD_NORM, rel=1e-12)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    x = torch.cat([torch.tensor(img), torch.tensor(txt)], dim=1)
    tz = torch.tanh(x @ tp["W1"] + tp["b1"]) @ tp["W2"] + tp["b2"]
    tl = F.binary_cross_entropy_with_logits(tz, torch.tensor(d))
    tl.backward()
    assert tl.item() == pytest.approx(nb06.GOLDEN_LOSS, rel=1e-13)
    norm = torch.sqrt(sum((tp[k].grad ** 2).sum() for k in tp)).item()
    assert norm == pytest.approx(nb06.GOLDEN_GRAD_NORM, rel=1e-12)
    nb06.check_golden(loss, grads)
    out = capsys.readouterr().out
    assert out.count("✓") == 2
    nb06.check_golden(loss * 1.01, grads)
    assert "✗ golden loss" in capsys.readouterr().out


# ---- typical mistakes get specific hints ---------------------------------------------------

def _sig_prime(dh):
    return dh * (1 - dh)


@pytest.mark.parametrize("wrong, hint", [
    (lambda dh, d: (d - dh) / len(d), "sign error"),
    (lambda dh, d: dh - d, "divide by the batch size"),
    (lambda dh, d: (dh - d) * _sig_prime(dh) / len(d), "once too often"),
    (lambda dh, d: -(d / dh - (1 - d) / (1 - dh)) / len(d), "that is ∂L/∂d̂"),
    (lambda dh, d: np.full(len(d), (dh - d).mean()), "not the batch sum"),
    (lambda dh, d: None, "return"),
])
def test_bce_grad_z_mistakes(lenient, capsys, wrong, hint):
    nb06.check_bce_grad_z(wrong)
    out = capsys.readouterr().out
    assert "✗" in out and hint in out


def test_bce_grad_z_unrecognised_answer_still_gets_a_hint(lenient, capsys):
    nb06.check_bce_grad_z(lambda dh, d: (dh - d) ** 2)
    out = capsys.readouterr().out
    assert "✗" in out and "Hint: chain rule" in out


def _backward_with(**changes):
    """The reference backward with one typical slip (named by ``changes``)."""
    def fn(cache, dz):
        x, h, W1, W2 = cache["x"], cache["h"], cache["W1"], cache["W2"]
        dh = np.outer(dz, W2)
        da = dh if changes.get("no_tanh") else dh * (1 - h**2)
        g = losses.fusion_head_backward(cache, dz)
        if changes.get("no_tanh"):
            g.update(W1=x.T @ da, b1=da.sum(0))
        if changes.get("transposed"):
            g["W1"] = da.T @ x
        if changes.get("mean_b1"):
            g["b1"] = da.mean(0)
        if changes.get("W1_not_T"):
            g["img"] = (da @ W1)[:, :cache["n_img"]]
        if changes.get("drop"):
            del g["txt"]
        if changes.get("sign"):
            g["W2"] = -g["W2"]
        return g
    return fn


@pytest.mark.parametrize("changes, hint", [
    ({"no_tanh": True}, "skipped the tanh"),
    ({"transposed": True}, "transposed weight gradient"),
    ({"mean_b1": True}, "already carries the 1/N"),
    ({"W1_not_T": True}, "da W1ᵀ, not da W1"),
    ({"drop": True}, "missing ['txt']"),
    ({"sign": True}, "sign error"),
])
def test_fusion_head_backward_mistakes(lenient, capsys, changes, hint):
    nb06.check_fusion_head_backward(_backward_with(**changes))
    out = capsys.readouterr().out
    assert "✗" in out and hint in out


def test_fusion_head_backward_not_a_dict(lenient, capsys):
    nb06.check_fusion_head_backward(lambda cache, dz: [1, 2])
    out = capsys.readouterr().out
    assert "✗" in out and "a dict of gradients" in out


def _naive_softmax(z, axis=1):
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("wrong, hint", [
    (lambda z, y: (losses.softmax(z, axis=0) - np.eye(z.shape[1])[y]) / len(y), "wrong axis"),
    (lambda z, y: losses.softmax(z, axis=1) - np.eye(z.shape[1])[y], "divide by the batch size"),
    (lambda z, y: (np.eye(z.shape[1])[y] - losses.softmax(z, axis=1)) / len(y), "sign error"),
    (lambda z, y: losses.softmax(z, axis=1) / len(y), "subtract the one-hot"),
    (lambda z, y: (_naive_softmax(z) - np.eye(z.shape[1])[y]) / len(y), "subtract each row's maximum"),
])
def test_softmax_ce_grad_mistakes(lenient, capsys, wrong, hint):
    with np.errstate(over="ignore", invalid="ignore"):
        nb06.check_softmax_ce_grad(wrong)
    out = capsys.readouterr().out
    assert "✗" in out and hint in out


def _pr(S):
    return losses.softmax(S, axis=1)


def _pc(S):
    return losses.softmax(S, axis=0)


@pytest.mark.parametrize("wrong, hint", [
    (lambda S: (_pr(S) - np.eye(len(S))) / (2 * len(S)), "kept only the image→text"),
    (lambda S: (_pr(S) - np.eye(len(S))) / len(S), "one-directional InfoNCE"),
    (lambda S: ((_pr(S) - np.eye(len(S))) + (_pc(S) - np.eye(len(S)))) / 2, "divide by the batch size"),
    (lambda S: ((_pr(S) - np.eye(len(S))) + (_pc(S) - np.eye(len(S))).T) / (2 * len(S)), "transpose it back"),
    (lambda S: (2 * np.eye(len(S)) - _pr(S) - _pc(S)) / (2 * len(S)), "sign error"),
    (lambda S: ((_pr(S) - np.eye(len(S))) + (_pc(S) - np.eye(len(S)))) / len(S), "forgot the ½"),
])
def test_infonce_grad_mistakes(lenient, capsys, wrong, hint):
    nb06.check_infonce_grad(wrong)
    out = capsys.readouterr().out
    assert "✗" in out and hint in out


# ---- exercise 6.5: adam_step -----------------------------------------------------------------

def _adam(theta, grad, state, lr, lam, decoupled, betas=(0.9, 0.999), eps=1e-8, *, l2=None, decay="before",
          bias_correction=True):
    """An independent Adam/AdamW step with switchable slips (l2: put λθ in the gradient)."""
    b1, b2 = betas
    l2 = (not decoupled) if l2 is None else l2
    g = grad + lam * theta if l2 else grad
    state["t"] += 1
    state["m"] = b1 * state["m"] + (1 - b1) * g
    state["v"] = b2 * state["v"] + (1 - b2) * g * g
    m, v = state["m"], state["v"]
    if bias_correction:
        m, v = m / (1 - b1 ** state["t"]), v / (1 - b2 ** state["t"])
    upd = lr * m / (np.sqrt(v) + eps)
    if l2:
        return theta - upd
    if decay == "after":
        return (theta - upd) * (1 - lr * lam)
    if decay == "no_lr":
        return theta * (1 - lam) - upd
    return theta * (1 - lr * lam) - upd


def test_adam_step_reference_matches_torch():
    theta0 = np.array([2.0, -1.0, 1.5, 0.5])
    c, target = np.array([100.0, 1.0, 0.0, 0.01]), np.array([1.0, 0.0, 0.0, 0.0])
    for decoupled, Opt in [(False, torch.optim.Adam), (True, torch.optim.AdamW)]:
        w = torch.tensor(theta0, requires_grad=True)
        opt = Opt([w], lr=0.1, weight_decay=0.5)
        th, state = theta0.copy(), {"t": 0, "m": 0.0, "v": 0.0}
        for _ in range(4):
            opt.zero_grad()
            (0.5 * (torch.tensor(c) * (w - torch.tensor(target)) ** 2).sum()).backward()
            th = nb06.reference_adam_step(th, w.grad.numpy().copy(), state, 0.1, 0.5, decoupled)
            opt.step()
        assert np.allclose(w.detach().numpy(), th, atol=1e-14, rtol=0)


def test_adam_step_reference_and_independent_version_pass(lenient, capsys):
    for fn in (nb06.reference_adam_step, _adam):
        nb06.check_adam_step(fn)
        out = capsys.readouterr().out
        assert out.count("✓") == 2 and "✗" not in out
    nb06.check_adam_step(_stub)
    out = capsys.readouterr().out
    assert "pending" in out and "✗" not in out


def _new_state_dict(theta, grad, state, lr, lam, decoupled):
    state = dict(state)  # rebinding: the caller's dict never changes
    return _adam(theta, grad, state, lr, lam, decoupled)


@pytest.mark.parametrize("wrong, hint", [
    (lambda *a: _adam(*a, l2=True), "that is Adam + L2"),            # L2 whatever `decoupled` says
    (lambda *a: _adam(*a, l2=False), "that is AdamW"),               # decoupled whatever it says
    (lambda th, g, s, lr, lam, d: _adam(th, g, s, lr, 0.0, d), "λ plays no part"),
    (lambda *a: _adam(*a, bias_correction=False), "bias correction"),
    (lambda *a: _adam(*a, decay="no_lr"), "not θ·(1 − λ)"),
    (lambda *a: _adam(*a, decay="after"), "before this step's update"),
    (_new_state_dict, "update `state` in place"),
    (lambda *a: None, "return the updated weights"),
])
def test_adam_step_mistakes(lenient, capsys, wrong, hint):
    nb06.check_adam_step(wrong)
    out = capsys.readouterr().out
    assert "✗" in out and hint in out


def test_adam_step_strict_raises_on_the_l2_mistake(monkeypatch):
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")
    with pytest.raises(checks.CheckFailed, match="that is Adam \\+ L2"):
        nb06.check_adam_step(lambda *a: _adam(*a, l2=True))


# ---- quizzes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("check, right, wrong, explains", [
    (nb06.check_quiz_6_1, -0.025, -0.1, "(0.9 − 1)/4"),
    (nb06.check_quiz_6_2, "b", "a", "float32"),
    (nb06.check_quiz_6_3, -0.02, -0.01, "−ηλθ"),
])
def test_quizzes(quiz_behaviour, check, right, wrong, explains):
    quiz_behaviour(check, right, wrong, explains)
