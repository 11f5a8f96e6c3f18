"""mmcourse.losses (notebook 06; clip_loss for notebook 04): values against PyTorch, gradients
against autograd and central differences, clip_loss against an explicit-loop formulation."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmcourse import gradcheck, losses


def test_sigmoid_is_stable_and_matches_torch():
    z = np.array([-800.0, -30.0, -1.0, 0.0, 2.0, 40.0, 800.0])
    s = losses.sigmoid(z)
    assert np.all(np.isfinite(s)) and s[0] == 0.0 and s[-1] == 1.0
    assert np.allclose(s, torch.sigmoid(torch.tensor(z)).numpy(), rtol=1e-15, atol=0)


def test_bce_forms_agree_with_torch():
    z = np.linspace(-3, 4, 9)
    d = np.array([1, 0, 1, 1, 0, 0.5, 1, 0, 0.2])
    ref = F.binary_cross_entropy_with_logits(torch.tensor(z), torch.tensor(d)).item()
    assert losses.bce_with_logits(z, d) == pytest.approx(ref, rel=1e-13)
    assert losses.bce_loss(losses.sigmoid(z), d) == pytest.approx(ref, rel=1e-12)
    assert math.isfinite(losses.bce_with_logits(np.array([1000.0, -1000.0]), np.array([0.0, 1.0])))


def test_bce_grad_z_is_seeds_gradient_times_sigmoid_prime_and_autograd():
    z = np.linspace(-3, 4, 9)
    d = np.array([1, 0, 1, 1, 0, 0.5, 1, 0, 0.2])
    dh = losses.sigmoid(z)
    simplified = losses.bce_grad_z(dh, d)
    assert np.allclose(losses.bce_grad_dhat(dh, d) * dh * (1 - dh), simplified, rtol=1e-12, atol=0)
    t = torch.tensor(z, requires_grad=True)
    F.binary_cross_entropy_with_logits(t, torch.tensor(d)).backward()
    assert gradcheck.rel_error(simplified, t.grad) < 1e-13
    num = gradcheck.numeric_gradient(lambda v: losses.bce_with_logits(v, d), z.copy())
    assert gradcheck.rel_error(simplified, num) < 1e-7


def _torch_head(img, txt, p):
    x = torch.cat([img, txt], dim=1)
    return torch.tanh(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]


def test_fusion_head_forward_backward_match_autograd():
    rng = np.random.default_rng(0)
    img, txt = rng.normal(size=(6, 3)), rng.normal(size=(6, 4))
    params = {"W1": rng.normal(size=(7, 5)), "b1": rng.normal(size=5),
              "W2": rng.normal(size=5), "b2": np.array(0.1)}
    d = (rng.random(6) > 0.5).astype(float)
    z, cache = losses.fusion_head_forward(img, txt, params)
    grads = losses.fusion_head_backward(cache, losses.bce_grad_z(losses.sigmoid(z), d))
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    ti, tt = torch.tensor(img, requires_grad=True), torch.tensor(txt, requires_grad=True)
    tz = _torch_head(ti, tt, tp)
    assert np.allclose(tz.detach().numpy(), z, rtol=1e-14, atol=1e-14)
    F.binary_cross_entropy_with_logits(tz, torch.tensor(d)).backward()
    for k in params:
        assert grads[k].shape == params[k].shape
        assert gradcheck.rel_error(grads[k], tp[k].grad) < 1e-12, k
    assert gradcheck.rel_error(grads["img"], ti.grad) < 1e-12
    assert gradcheck.rel_error(grads["txt"], tt.grad) < 1e-12

    def loss():
        return losses.bce_with_logits(losses.fusion_head_forward(img, txt, params)[0], d)
    errs = gradcheck.check_gradients(loss, params, {k: grads[k] for k in params})
    assert max(errs.values()) < 1e-6


def test_softmax_and_cross_entropy_match_torch():
    z = np.linspace(-2, 3, 15).reshape(3, 5) * np.array([[1], [-2], [40]])
    y = np.array([4, 0, 2])
    assert np.allclose(losses.softmax(z).sum(axis=1), 1.0)
    assert np.allclose(losses.softmax(z + 1e4), losses.softmax(z))  # no overflow
    t = torch.tensor(z, requires_grad=True)
    F.cross_entropy(t, torch.tensor(y)).backward()
    assert losses.softmax_cross_entropy(z, y) == pytest.approx(
        F.cross_entropy(torch.tensor(z), torch.tensor(y)).item(), rel=1e-13)
    assert gradcheck.rel_error(losses.softmax_ce_grad(z, y), t.grad) < 1e-12


def test_infonce_loss_and_gradient():
    S = np.linspace(-1, 2.5, 25).reshape(5, 5)[:, [3, 1, 4, 0, 2]]
    t = torch.tensor(S, requires_grad=True)
    target = torch.arange(5)
    ref = 0.5 * (F.cross_entropy(t, target) + F.cross_entropy(t.T, target))
    ref.backward()
    assert losses.infonce_loss(S) == pytest.approx(ref.item(), rel=1e-13)
    g = losses.infonce_grad(S)
    assert gradcheck.rel_error(g, t.grad) < 1e-12
    assert gradcheck.rel_error(g, gradcheck.numeric_gradient(losses.infonce_loss, S.copy())) < 1e-7
    assert abs(g.sum()) < 1e-15  # adding a constant to every logit changes nothing


def clip_loss_loops(img, txt, scale):
    """CLIP's loss written out with explicit loops over pairs (independent of clip_loss)."""
    n = len(img)
    u = [img[i] / math.sqrt(sum(float(a) ** 2 for a in img[i])) for i in range(n)]
    v = [txt[j] / math.sqrt(sum(float(a) ** 2 for a in txt[j])) for j in range(n)]
    s = [[scale * sum(float(a) * float(b) for a, b in zip(u[i], v[j])) for j in range(n)] for i in range(n)]
    i2t = 0.0
    for i in range(n):  # image i must pick text i among all texts
        i2t += -s[i][i] + math.log(sum(math.exp(s[i][j]) for j in range(n)))
    t2i = 0.0
    for j in range(n):  # text j must pick image j among all images
        t2i += -s[j][j] + math.log(sum(math.exp(s[i][j]) for i in range(n)))
    return 0.5 * (i2t / n + t2i / n)


@pytest.mark.parametrize("scale", [1.0, 14.3, 100.0])
def test_clip_loss_matches_explicit_loops(scale):
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(6, 8, generator=g, dtype=torch.float64), torch.randn(6, 8, generator=g, dtype=torch.float64)
    got = losses.clip_loss(img, txt, scale)
    assert got.item() == pytest.approx(clip_loss_loops(img.numpy(), txt.numpy(), scale), rel=1e-12)
    # it is the NumPy InfoNCE of the scaled cosine-similarity matrix
    S = scale * (F.normalize(img, dim=1) @ F.normalize(txt, dim=1).T).numpy()
    assert got.item() == pytest.approx(losses.infonce_loss(S), rel=1e-12)


def test_clip_loss_properties_and_gradients():
    g = torch.Generator().manual_seed(1)
    img = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    txt = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    log_scale = torch.tensor(math.log(1 / 0.07), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, s: losses.clip_loss(a, b, s.exp()), (img, txt, log_scale))
    # symmetric in its two modalities; invariant to the embeddings' lengths
    assert losses.clip_loss(img, txt, 10.0).item() == pytest.approx(losses.clip_loss(txt, img, 10.0).item(), rel=1e-12)
    assert losses.clip_loss(3 * img, txt, 10.0).item() == pytest.approx(losses.clip_loss(img, txt, 10.0).item(), rel=1e-12)
    # perfectly aligned orthogonal pairs with a large scale: loss → 0; all-equal logits: log N
    eye = torch.eye(5, dtype=torch.float64)
    assert losses.clip_loss(eye, eye, 100.0).item() < 1e-30 + 1e-20
    assert losses.clip_loss(eye, eye, 0.0).item() == pytest.approx(math.log(5), rel=1e-12)
    # float32 and batched device-agnostic use
    l32 = losses.clip_loss(img.detach().float(), txt.detach().float(), torch.tensor(10.0))
    assert l32.dtype == torch.float32 and torch.isfinite(l32)
