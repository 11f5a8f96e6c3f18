"""mmcourse.image (notebook 02): every from-scratch piece against its library counterpart."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from torchvision.transforms import v2

from mmcourse import image


def test_to_model_input_equals_torchvision_totensor_normalize():
    photo = np.random.default_rng(0).integers(0, 256, size=(9, 13, 3), dtype=np.uint8)
    ours = image.to_model_input(photo)
    tv = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                     v2.Normalize(image.IMAGENET_MEAN, image.IMAGENET_STD)])(photo)
    assert ours.shape == (3, 9, 13) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, tv.as_subclass(torch.Tensor), atol=1e-6, rtol=1e-6)


def test_to_model_input_rejects_channels_first():
    with pytest.raises(ValueError, match="H, W, C"):
        image.to_model_input(np.zeros((3, 8, 8), dtype=np.uint8)[:, :, :2])


@pytest.mark.parametrize("h, w, p", [(8, 12, 4), (224, 224, 16), (32, 48, 8)])
def test_patchify_equals_unfold(h, w, p):
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(h + w + p))
    ours = image.patchify(x, p)
    ref = F.unfold(x, kernel_size=p, stride=p).transpose(1, 2)
    assert ours.shape == (2, image.num_patches(h, w, p), 3 * p * p)
    torch.testing.assert_close(ours, ref)


def test_patchify_raster_order_and_patch_content():
    x = torch.randn(1, 3, 8, 12, generator=torch.Generator().manual_seed(0))
    patches = image.patchify(x, 4)
    # patch 4 = grid row 1, column 1 (3 patches per row)
    torch.testing.assert_close(patches[0, 4], x[0, :, 4:8, 4:8].reshape(-1))


def test_num_patches_and_bad_sizes():
    assert image.num_patches(224, 224, 16) == 196
    assert image.num_patches(224, 224, 32) == 49
    with pytest.raises(ValueError, match="multiple"):
        image.num_patches(225, 224, 16)


def test_linear_patch_embedding_equals_conv2d():
    torch.manual_seed(0)
    p, d = 16, 32
    lin = torch.nn.Linear(3 * p * p, d)
    conv = image.patch_embedding_conv(lin.weight, lin.bias, 3, p)
    assert conv.kernel_size == (p, p) and conv.stride == (p, p)
    x = torch.randn(2, 3, 64, 96)
    by_linear = lin(image.patchify(x, p))  # (B, N, D)
    by_conv = conv(x).flatten(2).transpose(1, 2)  # (B, D, H/P, W/P) -> (B, N, D)
    torch.testing.assert_close(by_linear, by_conv, atol=1e-5, rtol=1e-5)


def test_vit_tokens_equals_conv_embedding_plus_cls_and_pos():
    torch.manual_seed(0)
    p, d = 4, 8
    x = torch.randn(2, 3, 8, 12)
    conv = torch.nn.Conv2d(3, d, kernel_size=p, stride=p)
    cls, pos = torch.randn(d), torch.randn(7, d)
    ours = image.vit_tokens(x, conv.weight.reshape(d, -1), conv.bias, cls, pos, p)
    patches = conv(x).flatten(2).transpose(1, 2)
    ref = torch.cat([cls.expand(2, 1, d), patches], dim=1) + pos
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_vit_tokens_match_transformers_vit_embeddings():
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=16,
                                 num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    emb = transformers.models.vit.modeling_vit.ViTEmbeddings(cfg).eval()
    torch.nn.init.normal_(emb.cls_token)
    torch.nn.init.normal_(emb.position_embeddings)
    x = torch.randn(2, 3, 32, 32)
    proj = emb.patch_embeddings.projection
    ours = image.vit_tokens(x, proj.weight.reshape(16, -1), proj.bias, emb.cls_token.reshape(-1),
                            emb.position_embeddings[0], 8)
    with torch.no_grad():
        ref = emb(x)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_attention_cost_grows_quadratically():
    a = image.attention_cost(224, 16, dim=768)
    assert a["tokens"] == 197 and a["attention_entries"] == 197 ** 2
    assert a["attention_flops"] == 4 * 197 ** 2 * 768 and a["projection_flops"] == 8 * 197 * 768 ** 2
    b = image.attention_cost(224, 8, dim=768)
    assert b["tokens"] == 785 and b["attention_entries"] > 15 * a["attention_entries"]


def test_topk_matches_softmax_topk():
    logits = torch.tensor([1.0, 3.0, 2.0, 0.0])
    top = image.topk(logits, ["a", "b", "c", "d"], k=2)
    assert [n for n, _ in top] == ["b", "c"]
    assert abs(top[0][1] - torch.softmax(logits, 0)[1].item()) < 1e-6


def test_pooled_features_feed_the_classifier():
    from torchvision.models import mobilenet_v2
    torch.manual_seed(0)
    model = mobilenet_v2().eval()
    x = torch.rand(3, 3, 64, 64)
    feats = image.pooled_features(model, x, batch_size=2, normalize=False)
    assert feats.shape == (3, 1280)
    with torch.no_grad():
        torch.testing.assert_close(model.classifier(feats), model(x), atol=1e-4, rtol=1e-4)
    normed = image.pooled_features(model, x, normalize=True)
    mean = torch.tensor(image.IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(image.IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(normed, image.pooled_features(model, (x - mean) / std, normalize=False))


def test_caption_mentions_whole_words_and_plurals():
    assert image.caption_mentions(["Two dogs play in the snow ."], "dog")
    assert image.caption_mentions(["A DOG runs"], "dog")
    assert not image.caption_mentions(["A man eats a hotdog", "doghouse"], "dog")


def test_probe_accuracy_equals_sklearn_pipeline():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 10)) * np.arange(1, 11)
    y = (x[:, 0] + x[:, 3] / 4 > 0).astype(int)
    acc = image.probe_accuracy(x[:120], y[:120], x[120:], y[120:])
    sc = StandardScaler().fit(x[:120])
    ref = LogisticRegression(max_iter=2000).fit(sc.transform(x[:120]), y[:120]).score(sc.transform(x[120:]), y[120:])
    assert acc == pytest.approx(ref) and acc >= 0.85


def test_probe_with_cv_chooses_c_on_train_only():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    rng = np.random.default_rng(0)
    x = rng.normal(size=(260, 30)) * np.geomspace(0.1, 10, 30)
    y = (x[:, 0] * 10 + x[:, 29] / 10 + rng.normal(size=260) > 0).astype(int)
    cs = (0.001, 0.1, 10.0)
    acc, c = image.probe_with_cv(x[:120], y[:120], x[120:], y[120:], cs=cs)
    pipe = lambda c: make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))  # noqa: E731
    best = max(cs, key=lambda c: cross_val_score(pipe(c), x[:120], y[:120], cv=5).mean())
    assert c == best
    assert acc == pytest.approx(pipe(c).fit(x[:120], y[:120]).score(x[120:], y[120:]))
    # the evaluation set plays no part in the choice: flipping its labels leaves C unchanged
    assert image.probe_with_cv(x[:120], y[:120], x[120:], 1 - y[120:], cs=cs)[1] == c
