"""mmcourse.alignment and losses.clip_loss (notebook 04): against independent brute-force
formulations written with explicit Python loops, plus golden values."""
import math

import numpy as np
import pytest
import torch

from mmcourse import alignment, losses
from mmcourse.data import transforms
from test_losses import clip_loss_loops  # the loop formulation of notebook 06's tests


@pytest.fixture
def one_thread():
    """Tiny tensors: a second intra-op thread only adds synchronisation (slow on a busy CPU)."""
    with transforms.one_thread():
        yield

# ---- independent references (plain Python loops, no vectorised shortcuts) ------------------


def ranks_brute(sim, match):
    """Sort each query's candidates best first and walk down until the first correct one."""
    sim, match = np.asarray(sim), np.asarray(match)
    out = []
    for q in range(sim.shape[0]):
        order = sorted(range(sim.shape[1]), key=lambda c: -sim[q, c])
        for pos, c in enumerate(order, start=1):
            if match[q, c]:
                out.append(pos)
                break
    return out


def recall_brute(sim, match, k):
    r = ranks_brute(sim, match)
    return sum(1 for x in r if x <= k) / len(r)


# ---- clip_loss -----------------------------------------------------------------------------

@pytest.mark.parametrize("n, d, scale", [(2, 3, 1.0), (5, 8, 14.3), (9, 4, 100.0), (16, 32, 0.5)])
def test_clip_loss_matches_explicit_loops(n, d, scale):
    g = torch.Generator().manual_seed(n * 100 + d)
    img = torch.randn(n, d, generator=g, dtype=torch.float64) * 3
    txt = torch.randn(n, d, generator=g, dtype=torch.float64)
    got = losses.clip_loss(img, txt, torch.tensor(scale, dtype=torch.float64))
    assert got.item() == pytest.approx(clip_loss_loops(img, txt, scale), rel=1e-12, abs=1e-12)


def test_clip_loss_is_symmetric_and_scale_is_inverse_temperature():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
    assert losses.clip_loss(img, txt, 7.0).item() == pytest.approx(losses.clip_loss(txt, img, 7.0).item(), rel=1e-12)
    # a perfect alignment: the loss goes to 0 as 1/τ grows, to log N at 1/τ = 0
    assert losses.clip_loss(img, img, 1000.0).item() < 1e-6
    assert losses.clip_loss(img, txt, 0.0).item() == pytest.approx(math.log(6), rel=1e-12)


def test_clip_loss_golden_value():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    txt = torch.tensor([[2.0, 0.5], [0.0, 3.0], [-1.0, 1.0]], dtype=torch.float64)
    # golden value, computed once with the loops of test_losses and with losses.infonce_loss (NumPy)
    golden = clip_loss_loops(img, txt, 10.0)
    assert golden == pytest.approx(2.7056262531460753, rel=1e-12)
    assert losses.clip_loss(img, txt, 10.0).item() == pytest.approx(golden, rel=1e-12)


def test_clip_loss_gradient_reaches_the_scale_and_the_embeddings(one_thread):
    g = torch.Generator().manual_seed(1)
    img = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    txt = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    log_scale = torch.tensor(math.log(1 / 0.07), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, s: losses.clip_loss(a, b, s.exp()), (img, txt, log_scale))


# ---- recall@K, ranks, median rank ------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_ranks_and_recall_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_img, per = int(rng.integers(2, 9)), int(rng.integers(1, 6))
    caption_image = rng.permutation(np.repeat(np.arange(n_img), per))
    sim = rng.normal(size=(n_img, len(caption_image)))
    match = alignment.match_matrix(caption_image, n_img)
    for s, m in ((sim, match), (sim.T, match.T)):  # image→text and text→image
        assert alignment.ranks(s, m).tolist() == ranks_brute(s, m)
        for k in (1, 2, 5, 10):
            assert alignment.recall_at_k(torch.tensor(s), torch.tensor(m), k) == pytest.approx(recall_brute(s, m, k))
        assert alignment.median_rank(s, m) == pytest.approx(float(np.median(ranks_brute(s, m))))


def test_ranks_golden_and_errors():
    sim = np.array([[0.9, 0.1, 0.5, 0.3],
                    [0.2, 0.8, 0.7, 0.1]])
    match = np.array([[False, False, True, True],   # best correct: 0.5, one better (0.9) → rank 2
                      [False, True, False, False]])  # 0.8 is the best → rank 1
    assert alignment.ranks(sim, match).tolist() == [2, 1]
    assert alignment.recall_at_k(sim, match, 1) == 0.5
    assert alignment.recall_at_k(sim, match, 2) == 1.0
    assert alignment.median_rank(sim, match) == 1.5
    with pytest.raises(ValueError, match="at least one correct"):
        alignment.ranks(sim, np.zeros_like(match))


def test_retrieval_metrics_perfect_and_chance():
    caption_image = np.repeat(np.arange(20), 5)
    emb = torch.eye(20)
    perfect = alignment.retrieval_metrics(emb, emb[caption_image], caption_image)
    assert perfect["i2t_R@1"] == perfect["t2i_R@1"] == 1.0 and perfect["i2t_medr"] == 1.0
    assert perfect["rsum"] == 6.0
    g = torch.Generator().manual_seed(0)
    chance = alignment.retrieval_metrics(torch.randn(20, 64, generator=g), torch.randn(100, 64, generator=g),
                                         caption_image)
    assert chance["t2i_R@1"] < 0.25 and chance["t2i_medr"] > 3


def test_cosine_similarity_and_zero_shot():
    a = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[10.0, 0.0], [0.0, 0.1], [-2.0, -2.0]])
    s = alignment.cosine_similarity_matrix(a, b)
    assert torch.allclose(s, torch.tensor([[1.0, 0.0, -2 ** -0.5], [2 ** -0.5, 2 ** -0.5, -1.0]]), atol=1e-6)
    # the class with the big norm does not win by its norm
    assert alignment.zero_shot_classify(torch.tensor([[0.1, 1.0]]), b).tolist() == [1]


def test_keyword_labels():
    caps = [["A dog runs ."], ["Two dogs and a cat"], ["a beach"], ["Snowy hill"], ["a dog on the beach"]]
    assert alignment.keyword_labels(caps, ["dog", "beach", "snow"]).tolist() == [0, 0, 1, -1, -1]


# ---- the dual encoder and the feature cache ------------------------------------------------

def test_dual_encoder_shapes_temperature_and_training_step():
    torch.manual_seed(0)
    model = alignment.DualEncoder(image_dim=12, text_dim=6, embed_dim=4, hidden=8, init_temperature=0.07)
    assert model.temperature() == pytest.approx(0.07, rel=1e-5)
    x, t = torch.randn(5, 12), torch.randn(5, 6)
    img, txt = model(x, t)
    assert img.shape == txt.shape == (5, 4)
    assert torch.allclose(img.norm(dim=1), torch.ones(5), atol=1e-5)
    loss = alignment.loss_fn(model, (x, t))
    loss.backward()
    assert model.log_scale.grad is not None and model.image_head[0].weight.grad is not None
    fixed = alignment.DualEncoder(12, 6, 4, hidden=None, learn_temperature=False, init_temperature=0.5)
    assert not fixed.log_scale.requires_grad and fixed.temperature() == pytest.approx(0.5)
    with torch.no_grad():
        model.log_scale.fill_(10.0)
    assert model.logit_scale().item() == pytest.approx(100.0)  # clamped like CLIP


def test_fit_trains_a_dual_encoder_on_toy_pairs(one_thread):
    from torch.utils.data import DataLoader, TensorDataset

    from mmcourse.train import fit

    g = torch.Generator().manual_seed(0)
    z = torch.randn(256, 8, generator=g)  # shared latent: both "modalities" are noisy views of it
    x = z @ torch.randn(8, 20, generator=g) + 0.1 * torch.randn(256, 20, generator=g)
    t = z @ torch.randn(8, 10, generator=g) + 0.1 * torch.randn(256, 10, generator=g)
    torch.manual_seed(0)  # the heads' init and the shuffling: the same run on every machine
    model = alignment.DualEncoder(20, 10, 8, hidden=None, dropout=0.0)
    before = alignment.retrieval_metrics(*model.eval()(x, t), np.arange(256))["i2t_R@1"]
    fit(model, alignment.loss_fn, DataLoader(TensorDataset(x, t), batch_size=64, shuffle=True),
        epochs=30, lr=1e-2, progress=False, device="cpu")
    after = alignment.retrieval_metrics(*model.eval()(x, t), np.arange(256))["i2t_R@1"]
    assert after > max(0.5, before + 0.3)


def test_cached_array_computes_once_and_keys_on_content(tmp_path, monkeypatch):
    monkeypatch.setenv("MMCOURSE_CACHE_DIR", str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return np.arange(6, dtype=np.float32).reshape(2, 3)

    a = alignment.cached_array("features-test", ["model", 128, ["a.jpg", "b.jpg"]], compute)
    b = alignment.cached_array("features-test", ["model", 128, ["a.jpg", "b.jpg"]], compute)
    assert len(calls) == 1 and np.array_equal(a, b)
    alignment.cached_array("features-test", ["model", 224, ["a.jpg", "b.jpg"]], compute)  # other size
    alignment.cached_array("features-test", ["model", 128, ["b.jpg", "a.jpg"]], compute)  # other list
    assert len(calls) == 3
    assert not list(tmp_path.rglob(".tmp-*"))  # atomic writes leave no temporary files


def test_paired_features_without_real_data_uses_the_synthetic_stand_in(tmp_path, monkeypatch):
    monkeypatch.setenv("MMCOURSE_DATA_DIR", str(tmp_path / "nothing"))
    monkeypatch.setenv("MMCOURSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MMCOURSE_MODEL_DIR", str(tmp_path / "no-models"))  # no pinned key to fall back on

    class FakeImageModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Conv2d(3, 1280, 1)

    class FakeText(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(2, 2)

    import mmcourse.text as text_mod

    calls = []
    monkeypatch.setattr(text_mod, "embed_sentences",
                        lambda m, tok, s, batch_size=64: calls.append("text") or torch.ones(len(s), 384))
    real_image_features = alignment.image_features
    monkeypatch.setattr(alignment, "image_features",
                        lambda *a, **k: calls.append("image") or real_image_features(*a, **k))
    torch.manual_seed(0)
    image_model, text_model = FakeImageModel(), FakeText()
    f = alignment.paired_features("test", 7, 32, 2, image_model, (text_model, None))
    assert f.source == "synthetic" and calls == ["image", "text"]
    assert f.image_feats.shape == (7, 1280) and f.text_feats.shape == (14, 384)
    assert f.match().shape == (7, 14) and f.match().sum() == 14
    assert len(f.captions_per_image) == 7
    # the same models (or identical copies): served from the cache, the models are not called
    twin = FakeImageModel()
    twin.load_state_dict(image_model.state_dict())
    g = alignment.paired_features("test", 7, 32, 2, twin, (text_model, None))
    assert calls == ["image", "text"] and np.array_equal(f.image_feats, g.image_feats)
    # one weight of the image encoder changed (fine-tuned, or another checkpoint): a miss for the
    # image features only, not the stale features of the other weights
    with torch.no_grad():
        twin.features.weight[0, 0, 0, 0] += 0.5
    h = alignment.paired_features("test", 7, 32, 2, twin, (text_model, None))
    assert calls == ["image", "text", "image"] and not np.array_equal(f.image_feats, h.image_feats)
    with torch.no_grad():
        text_model.proj.bias += 1
    alignment.paired_features("test", 7, 32, 2, twin, (text_model, None))
    assert calls == ["image", "text", "image", "text"]
    # without models the key is the pinned model's weights (none here): say what to pass
    with pytest.raises(ValueError, match="pass image_model"):
        alignment.paired_features("test", 7, 32, 2)


def test_paired_features_without_models_use_the_pinned_weights_key(tmp_path, monkeypatch):
    """A model loaded unchanged from the cache and no model at all share the manifest's key."""
    from mmcourse import pretrained

    monkeypatch.setenv("MMCOURSE_DATA_DIR", str(tmp_path / "nothing"))
    monkeypatch.setenv("MMCOURSE_CACHE_DIR", str(tmp_path / "cache"))
    keys = {"image": "sha256:" + "a" * 64, "text": "sha256:" + "b" * 64}
    monkeypatch.setattr(pretrained, "role_key", keys.get)
    model = torch.nn.Module()
    model.features = torch.nn.Conv2d(3, 1280, 1)
    text_model = torch.nn.Linear(2, 2)
    pretrained._remember_key(model, keys["image"])  # as pretrained.load does
    pretrained._remember_key(text_model, keys["text"])
    import mmcourse.text as text_mod
    monkeypatch.setattr(text_mod, "embed_sentences", lambda m, tok, s, batch_size=64: torch.ones(len(s), 384))
    f = alignment.paired_features("test", 5, 32, 1, model, (text_model, None))
    g = alignment.paired_features("test", 5, 32, 1)  # hit: no model needed
    assert np.array_equal(f.image_feats, g.image_feats) and np.array_equal(f.text_feats, g.text_feats)
    monkeypatch.setenv("MMCOURSE_MODEL_IMAGE", "IMAGENET1K_V2")
    monkeypatch.setattr(pretrained, "role_key", lambda role: None)  # an override: no pinned key
    with pytest.raises(ValueError, match="pass image_model"):
        alignment.paired_features("test", 5, 32, 1)


def test_dual_encoder_defaults_are_the_notebooks_linear_heads():
    model = alignment.DualEncoder()  # notebook 04's choice: one linear map per head (CLIP), dropout 0.4
    assert [type(m).__name__ for m in model.image_head] == ["Dropout", "Linear"]
    assert model.image_head[0].p == 0.4 and model.text_head[1].in_features == 384
