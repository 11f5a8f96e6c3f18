"""mmcourse.gradcam (notebook 09, §5): Grad-CAM against pytorch-grad-cam, the wrong variants a check
must reject, a model left as found, the hook traps of MobileNetV2's in-place ReLU6, and the
Adebayo et al. model-randomisation sanity check.

What is compared with pytorch-grad-cam: its ``GradCAM`` min-max scales the ReLU'd 7×7 map,
resizes it with ``cv2.resize`` (bilinear, half-pixel centres, as ``F.interpolate(...,
align_corners=False)``) and min-max scales again; min-max commutes with bilinear interpolation
(an affine map; the weights sum to 1), so its output equals ours (upsample, then min-max) at the
input resolution up to its 1e-7 epsilon. We compare the full-resolution maps.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from torchvision.models import mobilenet_v2

from mmcourse import gradcam

ATOL = 1e-4  # float32 maps in [0, 1]; observed differences are ~1e-6


def library_cam(model: nn.Module, layer: nn.Module, x: torch.Tensor, classes) -> np.ndarray:
    """pytorch-grad-cam's maps (it puts the model in eval mode; callers pass an eval model)."""
    with GradCAM(model=model, target_layers=[layer]) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])


def tiny_cnn(seed: int = 0) -> nn.Sequential:
    """A random CNN with BatchNorm and dropout; index 2 is the Grad-CAM layer (a conv block)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
        nn.MaxPool2d(2),
        nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, 5))


def tiny_images(n: int = 3, h: int = 20, w: int = 24) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(1))  # H != W catches swaps


def wrong_variants(activations: torch.Tensor, gradients: torch.Tensor, size) -> dict[str, np.ndarray]:
    """The typical wrong answers, post-processed exactly like ours."""
    raw = (gradients.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1)
    from_activations = torch.relu((activations.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1))
    return {"no ReLU": gradcam.minmax(gradcam.upsample(raw, size)).numpy(),
            "weights from activations": gradcam.minmax(gradcam.upsample(from_activations, size)).numpy()}


def hooks_left(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules()
            if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks]


# ---------------------------------------------------------------- tiny random CNN (no model files)

@pytest.mark.parametrize("target", [None, 3, [0, 4, 2]])
def test_tiny_cnn_matches_pytorch_grad_cam(target):
    model, x = tiny_cnn().eval(), tiny_images()
    ours = gradcam.grad_cam(model, x, model[2], target)
    _, _, classes = gradcam.activations_and_gradients(model, x, model[2], target)
    ref = library_cam(model, model[2], x, classes)
    assert ours.shape == (3, 20, 24) and ours.dtype == np.float32
    assert ours.min() == 0 and np.allclose(ours.max(axis=(1, 2)), 1)
    np.testing.assert_allclose(ours, ref, atol=ATOL)
    if target is None:
        with torch.no_grad():
            assert classes.tolist() == model(x).argmax(1).tolist()


def test_tiny_cnn_wrong_variants_differ_from_grad_cam_and_library():
    model, x = tiny_cnn().eval(), tiny_images()
    activations, gradients, classes = gradcam.activations_and_gradients(model, x, model[2], [0, 1, 2])
    ours = gradcam.cam_from(activations, gradients, (20, 24))
    ref = library_cam(model, model[2], x, classes)
    np.testing.assert_allclose(ours, ref, atol=ATOL)
    for name, wrong in wrong_variants(activations, gradients, (20, 24)).items():
        assert np.abs(wrong - ref).max() > 0.2, name


def test_model_left_as_found_train_mode_frozen_params_and_old_grads():
    model, x = tiny_cnn(), tiny_images()
    model.train()
    model[0].eval()  # a mixed state must come back as it was
    model[0][0].weight.requires_grad_(False)
    model[-1].weight.grad = torch.full_like(model[-1].weight, 7.0)  # a leftover from training
    state = copy.deepcopy(model.state_dict())
    modes = {n: m.training for n, m in model.named_modules()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    in_eval = copy.deepcopy(model).eval()
    maps = gradcam.grad_cam(model, x, model[2])
    np.testing.assert_array_equal(maps, gradcam.grad_cam(in_eval, x, in_eval[2]))  # BatchNorm on running stats
    for key, value in model.state_dict().items():  # BatchNorm running statistics untouched
        assert torch.equal(value, state[key]), key
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert torch.equal(model[-1].weight.grad, torch.full_like(model[-1].weight, 7.0))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "8.weight")
    assert hooks_left(model) == []


def test_hooks_removed_and_mode_restored_on_error():
    model, x = tiny_cnn().train(), tiny_images()
    with pytest.raises(ValueError, match=r"must lie in \[0, 4\]"):
        gradcam.grad_cam(model, x, model[2], target=5)
    with pytest.raises(RuntimeError):  # the forward pass itself fails: 1 channel for a 3-channel conv
        gradcam.grad_cam(model, x[:, :1], model[2])
    assert hooks_left(model) == [] and all(m.training for m in model.modules())


def test_frozen_backbone_still_gives_the_same_maps():
    model, x = tiny_cnn().eval(), tiny_images()
    expected = gradcam.grad_cam(model, x, model[2])
    for p in model.parameters():  # a linear probe freezes the backbone; here even the head
        p.requires_grad_(False)
    np.testing.assert_allclose(gradcam.grad_cam(model, x, model[2]), expected, atol=1e-6)
    assert not any(p.requires_grad for p in model.parameters())


def test_target_and_layer_errors_name_the_fix():
    model, x = tiny_cnn().eval(), tiny_images()
    with pytest.raises(ValueError, match="one class per image"):
        gradcam.grad_cam(model, x, model[2], target=[0, 1])
    with pytest.raises(ValueError, match="class indices"):
        gradcam.grad_cam(model, x, model[2], target=1.5)
    with pytest.raises(ValueError, match="not a submodule"):
        gradcam.grad_cam(model, x, nn.Conv2d(8, 16, 3))
    with pytest.raises(ValueError, match="no submodule"):
        gradcam.grad_cam(model, x, "features.18")
    with pytest.raises(ValueError, match=r"\(N, K, h, w\)"):
        gradcam.grad_cam(model, x, model[-1])
    by_name = gradcam.grad_cam(model, x[0], "2")  # a single (C, H, W) image, the layer by name
    np.testing.assert_array_equal(by_name, gradcam.grad_cam(model, x[:1], model[2]))


def test_minmax_keeps_an_all_zero_map_zero():
    maps = torch.stack([torch.zeros(4, 5), torch.full((4, 5), 2.0), torch.arange(20.0).reshape(4, 5)])
    out = gradcam.minmax(maps)
    assert torch.equal(out[0], torch.zeros(4, 5)) and torch.equal(out[1], torch.zeros(4, 5))
    torch.testing.assert_close(out[2], torch.arange(20.0).reshape(4, 5) / 19)


# ------------------------------------------------ the hook traps (torchvision MobileNetV2, random weights)

@pytest.fixture
def fresh_mobilenet() -> tuple[nn.Module, torch.Tensor]:
    """A new model per test: a full backward hook leaves a flag behind on the module."""
    torch.manual_seed(0)
    return mobilenet_v2(weights=None).eval(), torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("inner", [1, 2], ids=["BatchNorm", "ReLU6"])
def test_full_backward_hook_next_to_inplace_relu6_raises(fresh_mobilenet, inner):
    model, x = fresh_mobilenet
    module = model.features[-1][inner]
    assert isinstance(model.features[-1][2], nn.ReLU6) and model.features[-1][2].inplace
    handle = module.register_full_backward_hook(lambda m, grad_in, grad_out: None)
    try:
        with pytest.raises(RuntimeError, match="is a view and is being modified inplace"):
            model(x)
    finally:
        handle.remove()


def test_full_backward_hook_on_the_block_works_but_leaves_a_flag(fresh_mobilenet):
    model, x = fresh_mobilenet
    _, gradients, classes = gradcam.activations_and_gradients(model, x, model.features[-1])
    seen = []
    handle = model.features[-1].register_full_backward_hook(lambda m, grad_in, grad_out: seen.append(grad_out[0]))
    try:
        model(x).gather(1, classes[:, None]).sum().backward()
    finally:
        handle.remove()
    torch.testing.assert_close(seen[0], gradients)
    with pytest.raises(RuntimeError, match="Cannot use both regular backward hooks and full backward hooks"):
        model.features[-1].register_backward_hook(lambda m, grad_in, grad_out: None)


def test_deprecated_backward_hook_reports_the_gradient_of_another_tensor(fresh_mobilenet):
    model, x = fresh_mobilenet
    activations, gradients, classes = gradcam.activations_and_gradients(model, x, model.features[-1])
    seen, on_bn = [], []
    with pytest.warns(Warning, match="non-full backward hook"):  # a FutureWarning in torch 2.14
        handles = [model.features[-1].register_backward_hook(lambda m, gi, go: seen.append((gi, go))),
                   model.features[-1][1].register_backward_hook(lambda m, gi, go: on_bn.append(go[0]))]
        try:
            model(x).gather(1, classes[:, None]).sum().backward()
        finally:
            for handle in handles:
                handle.remove()
    grad_input, grad_output = seen[0]
    torch.testing.assert_close(grad_output[0], gradients)  # right here, by luck of where the node is
    # grad_input should be d y / d(module input), (N, 320, h, w); it is ReLU6's input gradient instead
    assert model.features[-1][0].in_channels == 320 and grad_input[0].shape == activations.shape
    unclipped = (activations > 0) & (activations < 6)
    torch.testing.assert_close(grad_input[0], gradients * unclipped)
    assert not unclipped.all() and not torch.allclose(grad_input[0], gradients)
    torch.testing.assert_close(on_bn[0], gradients * unclipped)  # on the BatchNorm: the pre-activation's


def test_tensor_hook_before_an_inplace_op_is_refused(fresh_mobilenet):
    model, x = fresh_mobilenet
    _, gradients, classes = gradcam.activations_and_gradients(model, x, model.features[-1])
    kept = {}

    def keep(m, inputs, output):
        kept["before"] = output.detach().clone()
        kept["tensor"] = output
        output.register_hook(lambda g: kept.setdefault("grad", g))

    handle = model.features[-1][1].register_forward_hook(keep)  # the BatchNorm, overwritten by ReLU6
    try:
        model(x).gather(1, classes[:, None]).sum().backward()
    finally:
        handle.remove()
    # the tensor now holds the post-ReLU6 values, its hook got the pre-ReLU6 gradient
    torch.testing.assert_close(kept["tensor"], kept["before"].clamp(0, 6))
    torch.testing.assert_close(kept["grad"], gradients * ((kept["before"] > 0) & (kept["before"] < 6)))
    with pytest.raises(ValueError, match="modified in place"):
        gradcam.grad_cam(model, x, model.features[-1][1])
    assert hooks_left(model) == []


def test_cascade_order_for_mobilenet():
    model = mobilenet_v2(weights=None)
    assert gradcam.cascade(model, blocks=2) == [
        ("classifier", ["classifier"]),
        ("features.18", ["classifier", "features.18"]),
        ("features.17", ["classifier", "features.18", "features.17"])]
    assert model.get_submodule("features.18") is model.features[-1]
    with pytest.raises(ValueError, match="steps="):
        gradcam.cascade(tiny_cnn())


# ---------------------------------------------------------------- rank correlation, overlay

def test_rank_correlation_hand_cases():
    x = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert gradcam.rank_correlation(x, np.exp(x)) == pytest.approx(1.0)  # monotone: ranks unchanged
    assert gradcam.rank_correlation(x, -x) == pytest.approx(-1.0)
    # d = (1, 1, 1, 1, 0): rho = 1 - 6 * 4 / (5 * 24) = 0.8
    assert gradcam.rank_correlation([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    assert np.isnan(gradcam.rank_correlation(np.zeros((2, 3)), x))
    with pytest.raises(ValueError, match="same shape"):
        gradcam.rank_correlation(x, x.T)


def test_overlay_blends_image_and_colormap():
    from matplotlib import colormaps
    image = torch.rand(3, 6, 8, generator=torch.Generator().manual_seed(0))
    cam = np.linspace(0, 1, 48).reshape(6, 8)
    out = gradcam.overlay(image, cam, alpha=0.4)
    assert out.shape == (6, 8, 3) and 0 <= out.min() and out.max() <= 1
    np.testing.assert_allclose(gradcam.overlay(image, cam, alpha=0.0), image.permute(1, 2, 0).numpy(), atol=1e-7)
    np.testing.assert_allclose(gradcam.overlay(image, cam, alpha=1.0), colormaps["jet"](cam)[..., :3])
    gray = gradcam.overlay(image[0], cam, alpha=0.0)
    assert np.array_equal(gray[..., 0], gray[..., 2])
    with pytest.raises(ValueError, match="before ImageNet normalisation"):
        gradcam.overlay(image * 3 - 1, cam)
    with pytest.raises(ValueError, match="size='input'"):
        gradcam.overlay(image, cam[:4])


# ---------------------------------------------------------------- pretrained MobileNetV2 on chest X-rays

@pytest.fixture(scope="module")
def mobilenet(models_ready) -> nn.Module:
    from mmcourse import pretrained
    model, _ = pretrained.load("image")
    return model.eval()


@pytest.fixture(scope="module")
def xrays() -> torch.Tensor:
    """Three Kermany test X-rays at 224 px (normal first, pneumonia last), ImageNet-normalised."""
    from mmcourse import data
    from mmcourse.data.transforms import normalize
    records = data.load("chest_xray", split="test", image_size=224, channels=3, cache=False)
    return torch.stack([normalize(records[i]["image"]) for i in (0, len(records) // 2, len(records) - 1)])


@pytest.mark.models
def test_mobilenet_xrays_match_pytorch_grad_cam(mobilenet, xrays):
    layer = mobilenet.features[-1]
    state = copy.deepcopy(mobilenet.state_dict())
    ours = gradcam.grad_cam(mobilenet, xrays, layer)
    other = gradcam.grad_cam(mobilenet, xrays, layer, [0, 500, 999])
    assert hooks_left(mobilenet) == [] and not mobilenet.training
    assert all(torch.equal(v, state[k]) for k, v in mobilenet.state_dict().items())
    assert all(p.grad is None for p in mobilenet.parameters())
    with torch.no_grad():
        predicted = mobilenet(xrays).argmax(1)
    np.testing.assert_allclose(ours, library_cam(mobilenet, layer, xrays, predicted), atol=ATOL)
    np.testing.assert_allclose(other, library_cam(mobilenet, layer, xrays, [0, 500, 999]), atol=ATOL)
    mobilenet.zero_grad(set_to_none=True)  # the library's loss.backward() leaves .grad on the parameters


@pytest.mark.models
def test_mobilenet_grad_cam_is_cam_and_wrong_variants_differ(mobilenet, xrays):
    """Global average pooling + one linear layer: d y_c / d A_k[i, j] = W_ck / (h w) everywhere, so the
    raw map sum_k alpha_k A_k sums over positions to y_c - b_c. A class with y_c - b_c near 0 has a
    map with both signs, which is where the ReLU shows."""
    linear = mobilenet.classifier[1]
    with torch.no_grad():
        logits = mobilenet(xrays)
    target = (logits - linear.bias).abs().argmin(1)
    activations, gradients, classes = gradcam.activations_and_gradients(mobilenet, xrays, mobilenet.features[-1],
                                                                        target)
    h, w = activations.shape[-2:]
    torch.testing.assert_close(gradients, linear.weight[classes][:, :, None, None].expand_as(gradients) / (h * w))
    raw = (gradients.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1)
    torch.testing.assert_close(raw.sum(dim=(1, 2)), logits.gather(1, classes[:, None])[:, 0] - linear.bias[classes],
                               atol=1e-4, rtol=1e-4)
    assert ((raw < 0).any(dim=(1, 2)) & (raw > 0).any(dim=(1, 2))).all()
    ours = gradcam.grad_cam(mobilenet, xrays, mobilenet.features[-1], target)
    np.testing.assert_allclose(ours, library_cam(mobilenet, mobilenet.features[-1], xrays, classes), atol=ATOL)
    mobilenet.zero_grad(set_to_none=True)
    for name, wrong in wrong_variants(activations, gradients, (224, 224)).items():
        assert np.abs(wrong - ours).max() > 0.2, name


@pytest.mark.models
def test_randomized_copy_changes_only_the_named_modules(mobilenet):
    state = copy.deepcopy(mobilenet.state_dict())
    rng = torch.random.get_rng_state()
    named = ["classifier", "features.18"]
    random = gradcam.randomized_copy(mobilenet, named, seed=0)
    assert torch.equal(torch.random.get_rng_state(), rng)  # the global random state is left alone
    assert all(torch.equal(v, state[k]) for k, v in mobilenet.state_dict().items())  # original untouched
    inside = lambda key: any(key.startswith(n + ".") for n in named)  # noqa: E731
    for key, value in random.state_dict().items():
        if not inside(key):
            assert torch.equal(value, state[key]), key
    for key, p in random.named_parameters():
        if inside(key):
            assert not torch.equal(p, state[key]), key
    again = gradcam.randomized_copy(mobilenet, named, seed=0).state_dict()
    assert all(torch.equal(v, again[k]) for k, v in random.state_dict().items())
    other = gradcam.randomized_copy(mobilenet, named, seed=1).state_dict()
    assert not torch.equal(other["classifier.1.weight"], random.state_dict()["classifier.1.weight"])
    with pytest.raises(ValueError, match="list of names"):
        gradcam.randomized_copy(mobilenet, "classifier")


@pytest.mark.models
def test_sanity_check_keeps_the_original_class_and_correlation_falls(mobilenet, xrays):
    layer = mobilenet.features[-1]
    rows = gradcam.sanity_check(mobilenet, xrays, layer)
    assert [r["step"] for r in rows] == ["original"] + [s for s, _ in gradcam.cascade(mobilenet)]
    assert rows[0]["mean_spearman"] == pytest.approx(1.0)
    for r in rows[1:]:  # well below the unrandomised 1.0 (a map made constant counts as uncorrelated)
        assert np.nan_to_num(r["spearman"], nan=0.0).mean() < 0.6, r
    # the class is the ORIGINAL prediction, not the randomised model's
    random = gradcam.randomized_copy(mobilenet, ["classifier"], seed=0)
    with torch.no_grad():
        predicted, random_predicted = mobilenet(xrays).argmax(1), random(xrays).argmax(1)
    assert not torch.equal(predicted, random_predicted)  # so the test can tell the two apart
    original = gradcam.grad_cam(mobilenet, xrays, layer)
    expected = [gradcam.rank_correlation(o, m)
                for o, m in zip(original, gradcam.grad_cam(random, xrays, "features.18", predicted))]
    np.testing.assert_allclose(rows[1]["spearman"], expected, atol=1e-9)
    assert hooks_left(mobilenet) == [] and not mobilenet.training
