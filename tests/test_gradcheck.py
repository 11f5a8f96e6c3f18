"""mmcourse.gradcheck (notebook 06): relative error and central-difference gradients."""
import numpy as np
import pytest
import torch

from mmcourse import gradcheck


def test_rel_error_basics():
    a = np.array([1.0, 2.0, 3.0])
    assert gradcheck.rel_error(a, a) == 0.0
    assert gradcheck.rel_error(a, a * (1 + 1e-6)) == pytest.approx(1e-6 / (2 + 1e-6), rel=1e-6)
    assert gradcheck.rel_error(np.zeros(3), np.zeros(3)) == 0.0  # 0/1e-8, no nan
    assert gradcheck.rel_error(torch.tensor([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    with pytest.raises(ValueError, match="shapes"):
        gradcheck.rel_error(np.zeros(2), np.zeros(3))


def test_numeric_gradient_matches_known_derivatives():
    x = np.linspace(-0.9, 2.0, 7)
    g = gradcheck.numeric_gradient(lambda v: np.sum(np.sin(v) * v**2), x)
    assert gradcheck.rel_error(g, np.cos(x) * x**2 + 2 * x * np.sin(x)) < 1e-8
    assert np.array_equal(x, np.linspace(-0.9, 2.0, 7))  # restored after perturbation


def test_numeric_gradient_matrix_and_upstream_gradient():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(3, 4))
    x = rng.normal(size=(5, 3))
    dout = rng.normal(size=(5, 4))
    g = gradcheck.numeric_gradient(lambda w: x @ w, W, df=dout)  # vector-Jacobian product
    assert gradcheck.rel_error(g, x.T @ dout) < 1e-8


def test_numeric_gradient_agrees_with_autograd():
    x = np.linspace(-2, 2, 10).reshape(2, 5)
    f = lambda v: float(np.log(np.exp(v).sum(axis=1)).sum())  # noqa: E731
    t = torch.tensor(x, requires_grad=True)
    torch.logsumexp(t, dim=1).sum().backward()
    assert gradcheck.rel_error(gradcheck.numeric_gradient(f, x.copy()), t.grad) < 1e-8


def test_numeric_gradient_refuses_float32():
    with pytest.raises(TypeError, match="float64"):
        gradcheck.numeric_gradient(lambda v: float(v.sum()), np.ones(3, dtype=np.float32))


def test_check_gradients_flags_a_wrong_gradient(capsys):
    params = {"w": np.array([0.5, -1.0, 2.0]), "b": np.array(0.3)}
    f = lambda: float(np.sum((params["w"] * 2 + params["b"]) ** 2))  # noqa: E731
    r = params["w"] * 2 + params["b"]
    good = {"w": 4 * r, "b": np.asarray(2 * r.sum())}
    errs = gradcheck.check_gradients(f, params, good, verbose=True)
    assert max(errs.values()) < 1e-8 and "relative error" in capsys.readouterr().out
    bad = {"w": 2 * r, "b": np.asarray(2 * r.sum())}
    assert gradcheck.check_gradients(f, params, bad)["w"] > 0.1
