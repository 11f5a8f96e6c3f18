"""Grad-CAM from scratch, and the model-randomisation sanity check (notebook 09, §5).

Grad-CAM (Selvaraju et al., ICCV 2017) explains the score ``y_c`` of class ``c`` (the logit,
before the softmax) with the output ``A`` (N, K, h, w) of a late convolutional layer, for
torchvision's MobileNetV2 ``model.features[-1]`` (1280 channels, 7×7 at 224 px):

    alpha_k = mean over (i, j) of  d y_c / d A_k[i, j]        one weight per channel
    cam     = ReLU( sum_k alpha_k A_k )                        (h, w): where evidence FOR c is

then upsampled bilinearly (``align_corners=False``) to the input size and min–max scaled per
image to [0, 1] (a constant map, e.g. all zero after the ReLU, comes back all zero); this is
also what pytorch-grad-cam's ``GradCAM`` returns (tests/test_gradcam.py). The ReLU keeps only
what speaks for ``c``; without it the map also ranks the evidence against ``c``.

For MobileNetV2 (global average pooling, then one linear layer ``W, b``) the gradient is the same
at every position, ``dy_c/dA_k[i, j] = W_ck / (h w)``, so Grad-CAM *is* CAM (Zhou et al. 2016) and
the raw map sums to ``y_c - b_c``. For a confidently predicted class the raw map is then often
positive everywhere (it was on three Kermany test X-rays with MobileNetV2's ImageNet head) and the
ReLU changes nothing after min–max scaling: a check that must catch a missing ReLU needs a class
whose map has both signs, e.g. the one with ``y_c - b_c`` nearest 0.

:func:`grad_cam` returns a float32 numpy array (N, H, W); :func:`activations_and_gradients`
gives ``A``, ``dy_c/dA`` and the classes for anyone who wants to build the map step by step.

How the gradient is captured. A forward hook on the layer keeps its output ``A`` and puts a
*tensor* hook on it (``A.register_hook``), which receives ``dy_c/dA`` during the backward pass.
The backward is ``torch.autograd.backward(score, inputs=[A])``: only the gradient with respect
to ``A`` is computed, so the parameters' ``.grad`` are never touched. The model is left as
found: hooks removed even on error, evaluated in eval mode (BatchNorm on its running
statistics, dropout off; in train mode BatchNorm would also overwrite its running statistics)
with every submodule's train/eval flag restored afterwards, ``requires_grad`` untouched. With a
frozen backbone (a linear probe) ``A`` does not require a gradient; the hook then starts the
graph at ``A`` (a detached copy that requires one), so Grad-CAM still works.

Why not module backward hooks (observed on torch 2.14 / torchvision 0.29; tests/test_gradcam.py
re-checks every statement below, so it stays true across versions). torchvision's MobileNetV2
ends each ``Conv2dNormActivation`` (conv → BatchNorm → ``ReLU6(inplace=True)``) with an
*in-place* activation, and module backward hooks see autograd nodes, not the tensors you meant:

- ``register_full_backward_hook`` wraps the module's inputs and outputs in a custom autograd
  Function (``BackwardHookFunction``) whose outputs are views. Hook the BatchNorm inside
  ``features[-1]`` (whose output ReLU6 then overwrites) or the ReLU6 itself (which overwrites its
  input), and the *forward* pass fails: ``RuntimeError: Output 0 of BackwardHookFunction is a view
  and is being modified inplace ...`` (pytorch/pytorch#61519; pytorch-grad-cam switched to tensor
  hooks for this reason). On ``features[-1]`` itself it happens to work (the in-place op is
  inside the module, nothing after it is in place) and ``grad_output[0]`` equals the tensor-hook
  gradient; so whether it works depends on which module you pick, not on Grad-CAM. Registering
  one also leaves a flag on the module (``_is_full_backward_hook``) that survives removing the
  hook: registering a ``register_backward_hook`` there afterwards raises "Cannot use both regular
  backward hooks and full backward hooks on a single Module".
- The deprecated ``register_backward_hook`` attaches to the last autograd node of the module
  (FutureWarning "Using a non-full backward hook when the forward contains multiple autograd Nodes
  ... will be missing some grad_input"). On ``features[-1]`` that node is ReLU6's backward:
  ``grad_input[0]`` is the gradient with respect to the BatchNorm output (N, 1280, 7, 7),
  zeroed where ReLU6 clipped, not the gradient with respect to the module's input
  (N, 320, 7, 7). ``grad_output[0]`` there happens to be right; on the BatchNorm it is the
  gradient of the pre-activation, again a different tensor. Nothing fails: the numbers are
  silently about another tensor.

A tensor hook is not immune either: on a tensor that a *later* op modifies in place (the
BatchNorm output again) it receives the gradient of the value *before* the in-place op, while the
tensor object now holds the values *after* it, so ``A`` and ``dy/dA`` would describe different
tensors. :func:`activations_and_gradients` checks the output's version counter after the forward
pass and refuses such a layer (pick the module that contains the in-place activation).

The sanity check (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018): an
explanation that survives randomising the weights it claims to explain is explaining the input,
not the model. :func:`sanity_check` re-initialises the model from the top in a cascade
(:func:`cascade`: classifier, then ``features[-1]``, ``features[-2]``, …, cumulative),
recomputes the maps with the class fixed to the ORIGINAL model's prediction (a randomised model
predicts arbitrary classes; changing the class would mix two effects), and reports the Spearman
rank correlation with the original maps (:func:`rank_correlation`). It should fall well below 1.
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

Target = int | Sequence[int] | np.ndarray | torch.Tensor | None


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for a block; afterwards every submodule gets back its own train/eval flag."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def layer_name(model: nn.Module, layer: nn.Module | str) -> str:
    """The dotted name of ``layer`` in ``model`` (``"features.18"``); checks that it exists."""
    if isinstance(layer, str):
        try:
            model.get_submodule(layer)
        except AttributeError:
            raise ValueError(f"{type(model).__name__} has no submodule {layer!r}; names look like "
                             f"{[n for n, _ in model.named_children()][:5]} (see model.named_modules())") from None
        return layer
    for name, module in model.named_modules():
        if module is layer:
            return name
    raise ValueError(f"the layer {type(layer).__name__} is not a submodule of this {type(model).__name__}: "
                     "pass a module of this very model (e.g. model.features[-1]) or its name")


def as_batch(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) tensor; a single (C, H, W) image becomes a batch of one."""
    if not isinstance(images, torch.Tensor) or images.dim() not in (3, 4):
        raise ValueError(f"images must be a (N, C, H, W) or (C, H, W) tensor, got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    return images[None] if images.dim() == 3 else images


def target_classes(target: Target, logits: torch.Tensor) -> torch.Tensor:
    """One class index per image: ``None`` → the predicted class, an int → that class for all."""
    n, k = logits.shape
    if target is None:
        return logits.argmax(dim=1)
    t = np.asarray(target.cpu() if isinstance(target, torch.Tensor) else target).reshape(-1)
    if t.dtype.kind not in "iu":
        raise ValueError(f"target must be class indices (int), got dtype {t.dtype}")
    if t.size == 1:
        t = np.repeat(t, n)
    if t.size != n:
        raise ValueError(f"target has {t.size} classes for {n} images: give one int for all images, "
                         "one class per image, or None for each image's predicted class")
    if t.min() < 0 or t.max() >= k:
        raise ValueError(f"target classes must lie in [0, {k - 1}] (the model has {k} outputs), got {t.tolist()}")
    return torch.as_tensor(t, dtype=torch.long, device=logits.device)


def activations_and_gradients(model: nn.Module, images: torch.Tensor, layer: nn.Module | str,
                              target: Target = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``A`` (N, K, h, w), ``dy_c/dA`` (same shape) and the classes ``c`` (N,) (notebook 09, §5).

    One forward pass (eval mode) with a forward hook on ``layer`` that keeps its output and puts a
    tensor hook on it; one backward pass from the summed target logits to that output only (the
    images are independent in eval mode, so image n gets d y_{c_n} / d A_n). All detached.
    """
    module = model.get_submodule(layer_name(model, layer))
    x = as_batch(images).to(next(model.parameters()).device)
    kept: list[tuple[torch.Tensor, int]] = []
    grads: list[torch.Tensor] = []

    def keep(mod: nn.Module, inputs, output):
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            raise ValueError(f"Grad-CAM needs a layer with a (N, K, h, w) tensor output; {type(mod).__name__} "
                             "returns something else: pick a convolutional block")
        if not output.requires_grad:  # frozen layers below: start the graph here
            output = output.detach().requires_grad_(True)
        output.register_hook(grads.append)
        kept.append((output, output._version))
        return output

    handle = module.register_forward_hook(keep)
    try:
        with evaluating(model), torch.enable_grad():
            logits = model(x)
    finally:
        handle.remove()
    activation = check_kept(kept, module)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError("the model must return logits (N, classes); wrap it so that it does")
    classes = target_classes(target, logits)
    score = logits.gather(1, classes[:, None]).sum()
    if not score.requires_grad:
        raise ValueError("the logits do not depend on the layer's output: is the layer on the path to the output?")
    torch.autograd.backward(score, inputs=[activation])
    return activation.detach(), grads[0].detach(), classes


def check_kept(kept: list[tuple[torch.Tensor, int]], module: nn.Module) -> torch.Tensor:
    """The one output the hook kept, refused if it ran twice or was modified in place after the layer."""
    if len(kept) != 1:
        raise ValueError(f"the layer {type(module).__name__} ran {len(kept)} times in one forward pass; "
                         "Grad-CAM needs a layer that runs exactly once")
    output, version = kept[0]
    if output._version != version:
        raise ValueError(f"the output of {type(module).__name__} was modified in place after the layer "
                         "(e.g. by an inplace ReLU): the activation and its gradient would describe different "
                         "tensors. Use the enclosing module that contains the activation (model.features[-1])")
    return output


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners=False, as cv2.resize) upsampling of (N, h, w) maps to ``size``."""
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Each (h, w) map of (N, h, w) scaled to [0, 1]; a constant map becomes all zero."""
    low = maps.amin(dim=(1, 2), keepdim=True)
    span = maps.amax(dim=(1, 2), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / span.clamp_min(torch.finfo(maps.dtype).tiny),
                       torch.zeros_like(maps))


def cam_from(activations: torch.Tensor, gradients: torch.Tensor,
             size: tuple[int, int] | None = None) -> np.ndarray:
    """Grad-CAM maps (N, h, w), or (N, *size) upsampled, in [0, 1] from ``A`` and ``dy_c/dA``."""
    weights = gradients.float().mean(dim=(2, 3), keepdim=True)           # alpha_k: (N, K, 1, 1)
    cam = F.relu((weights * activations.float()).sum(dim=1))           # (N, h, w)
    if size is not None:
        cam = upsample(cam, size)
    return minmax(cam).cpu().numpy()


def grad_cam(model: nn.Module, images: torch.Tensor, layer: nn.Module | str, target: Target = None,
             size: tuple[int, int] | str | None = "input") -> np.ndarray:
    """Grad-CAM maps, float32 numpy (N, H, W) in [0, 1] (notebook 09, §5).

    ``images``: (N, C, H, W), normalised as the model expects. ``layer``: the module (or its
    name), ``model.features[-1]`` for MobileNetV2. ``target``: None (each image's predicted
    class), one int for all images, or one class per image. ``size``: ``"input"`` (the images'
    H, W), ``None`` (the layer's resolution, e.g. 7×7) or ``(H, W)``.
    """
    activations, gradients, _ = activations_and_gradients(model, images, layer, target)
    if size == "input":
        size = tuple(as_batch(images).shape[-2:])
    return cam_from(activations, gradients, size)


def overlay(image: torch.Tensor | np.ndarray, cam: np.ndarray | torch.Tensor, alpha: float = 0.4,
            cmap: str = "jet") -> np.ndarray:
    """An RGB (H, W, 3) float image in [0, 1] for ``plt.imshow``: ``(1 - alpha) image + alpha cmap(cam)``.

    ``image``: (C, H, W) with C in {1, 3} or (H, W) gray, values in [0, 1] (the image before
    ImageNet normalisation); ``cam``: (H, W) in [0, 1], e.g. ``grad_cam(...)[i]``.
    """
    from matplotlib import colormaps

    img = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image, dtype=np.float64)
    if img.ndim == 3 and img.shape[0] in (1, 3):
        img = img.transpose(1, 2, 0)
    elif img.ndim == 2:
        img = img[..., None]
    else:
        raise ValueError(f"image must be (C, H, W) with C in {{1, 3}} or (H, W), got shape {img.shape}")
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    if img.min() < 0 or img.max() > 1:
        raise ValueError(f"image values must lie in [0, 1], got [{img.min():.2f}, {img.max():.2f}]: pass the "
                         "image before ImageNet normalisation")
    heat = np.asarray(cam.detach().cpu() if isinstance(cam, torch.Tensor) else cam, dtype=np.float64)
    if heat.shape != img.shape[:2]:
        raise ValueError(f"cam shape {heat.shape} differs from the image's {img.shape[:2]}: compute it with "
                         "grad_cam(..., size='input') on this image")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    colour = colormaps[cmap](np.clip(heat, 0, 1))[..., :3]
    return np.clip((1 - alpha) * img + alpha * colour, 0, 1)


def reinitialize(module: nn.Module) -> None:
    """Fresh random parameters for every submodule: ``reset_parameters()``, else N(0, 0.01²)."""
    for m in module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        else:
            for p in m.parameters(recurse=False):
                nn.init.normal_(p, std=0.01)


def randomized_copy(model: nn.Module, modules: Sequence[str], seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with the named submodules re-initialised (Adebayo et al. 2018).

    The original is untouched and the global random state is left as it was (the seed only
    drives this re-initialisation). BatchNorm's ``reset_parameters`` also resets its running
    statistics (mean 0, variance 1), as a freshly built network has them.
    """
    if isinstance(modules, str):
        raise ValueError("modules must be a list of names, e.g. ['classifier'], not one string")
    names = [layer_name(model, name) for name in modules]
    clone = copy.deepcopy(model)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for name in names:
            reinitialize(clone.get_submodule(name))
    return clone


def cascade(model: nn.Module, blocks: int = 4) -> list[tuple[str, list[str]]]:
    """The cascading randomisation order for a torchvision MobileNetV2, cumulative from the top.

    ``[("classifier", ["classifier"]), ("features.18", ["classifier", "features.18"]), ...]``
    down to ``blocks`` feature blocks.
    """
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential) or not isinstance(getattr(model, "classifier", None), nn.Module):
        raise ValueError(f"cascade() knows torchvision's MobileNetV2 layout (model.features, model.classifier); "
                         f"for a {type(model).__name__} pass steps=[(name, [module names]), ...] to sanity_check")
    if not 0 <= blocks <= len(features):
        raise ValueError(f"blocks must lie in [0, {len(features)}], got {blocks}")
    names = ["classifier"] + [f"features.{i}" for i in range(len(features) - 1, len(features) - 1 - blocks, -1)]
    return [(name, names[: i + 1]) for i, name in enumerate(names)]


def rank_correlation(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Spearman rank correlation of two maps of the same shape (flattened); NaN if either is constant."""
    a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    b = np.asarray(b.detach().cpu() if isinstance(b, torch.Tensor) else b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"maps must have the same shape, got {a.shape} and {b.shape}")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")  # no ranking to correlate (e.g. a map that the ReLU zeroed)
    return float(stats.spearmanr(a.ravel(), b.ravel()).statistic)


def sanity_check(model: nn.Module, images: torch.Tensor, layer: nn.Module | str,
                 steps: Sequence[tuple[str, Sequence[str]]] | None = None, target: Target = None,
                 seed: int = 0) -> list[dict]:
    """Cascading model-parameter randomisation (Adebayo et al. 2018) for Grad-CAM (notebook 09, §5).

    ``steps`` defaults to :func:`cascade` (classifier, then the top feature blocks). The class of
    every map is fixed to ``target``, by default the ORIGINAL model's prediction, for every step.
    Returns one row per step, first the unrandomised model: ``{"step", "randomized" (module
    names), "spearman" (per image; NaN for a constant map), "mean_spearman" (over the images with
    a defined correlation), "constant_maps"}``.
    """
    name = layer_name(model, layer)
    activations, gradients, classes = activations_and_gradients(model, images, name, target)
    size = tuple(as_batch(images).shape[-2:])
    original = cam_from(activations, gradients, size)
    rows = [row("original", [], original, original)]
    for step, modules in (cascade(model) if steps is None else steps):
        maps = grad_cam(randomized_copy(model, list(modules), seed), images, name, classes, size)
        rows.append(row(step, list(modules), original, maps))
    return rows


def sanity_check_maps(model: nn.Module, maps_fn: Callable[[nn.Module], np.ndarray],
                      steps: Sequence[tuple[str, Sequence[str]]], seed: int = 0) -> list[dict]:
    """The same cascading randomisation for any map a model gives (notebook 12, §6: a captioning
    decoder's cross-attention): ``maps_fn(model)`` returns one map per example; each step
    re-initialises its modules in a copy (:func:`randomized_copy`). Rows as :func:`sanity_check`."""
    original = np.asarray(maps_fn(model))
    rows = [row("original", [], original, original)]
    for step, modules in steps:
        rows.append(row(step, list(modules), original, np.asarray(maps_fn(randomized_copy(model, list(modules), seed)))))
    return rows


def row(step: str, modules: list[str], original: np.ndarray, maps: np.ndarray) -> dict:
    """One sanity-check row: per-image Spearman correlations with the original maps and their mean."""
    rho = np.array([rank_correlation(o, m) for o, m in zip(original, maps)])
    defined = rho[~np.isnan(rho)]
    return {"step": step, "randomized": modules, "spearman": rho,
            "mean_spearman": float(defined.mean()) if defined.size else float("nan"),
            "constant_maps": int(np.isnan(rho).sum())}
