"""Explanations built on the backward pass: Grad-CAM, guided Grad-CAM, SmoothGrad, sanity checks.

Everything here is a small composition of :meth:`Graph.forward` and
:func:`minigbp.model.backward_tape`; the ReLU rules stay in :mod:`minigbp.ops.relu`.

Modes (``mode=`` of :func:`attribute`, :data:`MODES`):

* ``"vanilla"``, ``"deconvnet"``, ``"guided"``: the input signal of :func:`minigbp.backprop`.
* ``"gradcam"`` (Selvaraju et al. 2017): with ``A`` the activations of a late layer
  (N, K, h, w) and ``G = dy/dA`` the vanilla gradient of the target score there,
  ``alpha_k = mean_{i,j} G[k, i, j]`` and ``cam = ReLU(sum_k alpha_k A[k])`` (N, h, w),
  upsampled to the input size (the ``upsample`` convention: bilinear, or nearest as
  Captum does). Returned as (N, 1, H, W).
* ``"guided-gradcam"``: the guided signal times the upsampled ``cam`` (per pixel).

Targets (``target=``): every form of :mod:`minigbp.targets` (``"top1"``, an int, an int
array, ``"layer:NAME"``, ``"channel:NAME:C"``, ``"neuron:NAME:C:Y:X"``, a seed array);
Grad-CAM explains class scores only.
"""

import copy

import numpy as np

from ..io.image import bilinear_resize, nearest_resize
from ..layers import AdaptiveAvgPool2d, Conv2d, Flatten, ReLU
from ..model import Graph, backward_tape, forward_nodes, prepare
from ..sequential import Sequential
from ..ops.relu import MODES as BACKPROP_MODES
from ..targets import Target, as_target, parse_targets

__all__ = ["attribute", "gradcam", "smoothgrad", "default_gradcam_layer", "cascading_randomization", "spearman",
           "MODES", "Target", "parse_targets"]

MODES = BACKPROP_MODES + ("gradcam", "guided-gradcam")


def _as_model(model):
    return model if isinstance(model, Graph) else Sequential(model)


def default_gradcam_layer(model):
    """The rectified last convolution: among the nodes before the first Flatten or global
    pooling (``AdaptiveAvgPool2d`` to 1x1), the last ReLU, else the last Conv2d. That is
    ``features.29`` in VGG16, the output of ``layer4`` in a ResNet (its last ReLU) and the
    ReLU after ``features.norm5`` in a DenseNet, where Grad-CAM's feature maps usually come from."""
    leaves = _as_model(model).named_leaves()
    flat = next((i for i, (_, layer) in enumerate(leaves) if isinstance(layer, Flatten)
                 or (isinstance(layer, AdaptiveAvgPool2d) and layer.output_size == (1, 1))), len(leaves))
    for kind in (ReLU, Conv2d):
        for name, layer in reversed(leaves[:flat]):
            if isinstance(layer, kind):
                return name
    raise ValueError("no convolutional layer before the Flatten: give gradcam a layer name")


def gradcam(model, x, target="top1", layer=None, upsample="bilinear"):
    """Grad-CAM maps (N, 1, H, W) for one class target (see the module docstring for the equation).

    ``layer`` (a node or block name) defaults to :func:`default_gradcam_layer`; ``upsample``
    is "bilinear" (``torch.nn.functional.interpolate``'s, ``align_corners=False``) or
    "nearest" (Captum's ``LayerAttribution.interpolate``). The map is not normalized.
    """
    model = _as_model(model)
    layer = model.resolve(default_gradcam_layer(model) if layer is None else layer)
    t = as_target(target)
    if t.kind not in ("class", "rank"):
        raise ValueError(f"gradcam explains a class score; target {t.describe()} is not a class")
    kept = {}

    def keep(name, lyr, out):
        if name == layer:
            kept["A"] = out

    out, tape = forward_nodes(model.nodes_through(), x, on_step=keep)
    if "A" not in kept:
        raise ValueError(f"gradcam: layer {layer!r} does not feed the model's output")
    A = kept["A"]
    if A.ndim != 4:
        raise ValueError(f"gradcam: layer {layer!r} has output shape {A.shape}, not (N, K, h, w)")
    G = backward_tape(t.seed(out), tape, "vanilla", until=layer)  # dy/dA, (N, K, h, w)
    alpha = G.mean(axis=(2, 3), keepdims=True)  # (N, K, 1, 1)
    cam = np.maximum((alpha * A).sum(axis=1, keepdims=True), 0)  # (N, 1, h, w)
    resize = {"bilinear": bilinear_resize, "nearest": nearest_resize}[upsample]
    return resize(cam, x.shape[2:]).astype(x.dtype)


def attribute(model, x, target="top1", mode="guided", *, gradcam_layer=None, smooth=0, noise_level=0.15,
              noise_seed=0, preset=None, conventions=None, **switches):
    """One explanation map for one target.

    Parameters
    ----------
    model : Graph or Sequential
    x : (N, C, H, W) float32/float64, never modified
    target : any form of :mod:`minigbp.targets` (default "top1"; "top:K" must be split first)
    mode : one of :data:`MODES`
    gradcam_layer : layer for "gradcam"/"guided-gradcam" (default: :func:`default_gradcam_layer`)
    smooth : if > 0, SmoothGrad with this many noisy samples (see :func:`smoothgrad`)
    noise_level, noise_seed : SmoothGrad's noise scale and the seed of its random generator
    preset, conventions, **switches : as in :func:`minigbp.backprop`; Grad-CAM itself is a
        plain gradient and reads only the ``upsample`` switch, guided Grad-CAM's guided
        part follows the conventions of the guided mode

    Returns
    -------
    ndarray: (N, C, H, W) for the backprop modes and guided Grad-CAM, (N, 1, H, W) for Grad-CAM,
    identical to :func:`minigbp.backprop` for the backprop modes when ``smooth`` is 0.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    rules_mode = {"gradcam": None, "guided-gradcam": "guided"}.get(mode, mode)  # whose conventions apply
    model, rules = prepare(model, rules_mode, preset, conventions, switches)
    t = as_target(target)
    if t.kind == "rank":  # the class is fixed on the clean input: noise cannot change it
        t = Target("class", t.classes(model(x)))
    if mode in ("gradcam", "guided-gradcam") and t.kind != "class":
        raise ValueError(f"{mode} explains a class score; target {t.describe()} is not a class")

    def one(z):
        if mode in BACKPROP_MODES:
            return _signal(model, z, t, mode, rules)
        cam = gradcam(model, z, t, gradcam_layer, rules.upsample)
        return cam if mode == "gradcam" else _signal(model, z, t, "guided", rules) * cam

    return smoothgrad(one, x, smooth, noise_level, noise_seed)


def _signal(model, x, target, mode, rules):
    out, tape = model.forward(x, upto=target.layer)
    return backward_tape(target.seed(out, rules.seed), tape, mode, conventions=rules)


def smoothgrad(fn, x, n=50, noise_level=0.15, noise_seed=0):
    """SmoothGrad (Smilkov et al. 2017): the mean of ``fn(x + noise)`` over ``n`` draws.

    ``noise ~ N(0, sigma^2)`` with ``sigma = noise_level * (max(x_i) - min(x_i))`` per
    sample ``i``, drawn from ``np.random.default_rng(noise_seed)``. ``n = 0`` returns
    ``fn(x)``. Works with any mode's map function.
    """
    if n <= 0:
        return fn(x)
    rng = np.random.default_rng(noise_seed)
    span = (x.max(axis=tuple(range(1, x.ndim)), keepdims=True)
            - x.min(axis=tuple(range(1, x.ndim)), keepdims=True))
    total = None
    for _ in range(n):
        noisy = (x + rng.standard_normal(x.shape) * noise_level * span).astype(x.dtype)
        m = fn(noisy)
        total = m.astype(np.float64) if total is None else total + m
    return (total / n).astype(x.dtype)


# ------------------------------------------------------------------- sanity checks

def spearman(a, b):
    """Spearman rank correlation of two arrays (ties get their average rank)."""
    def ranks(v):
        _, inverse, counts = np.unique(np.ravel(v), return_inverse=True, return_counts=True)
        ends = np.cumsum(counts)
        return (ends - (counts - 1) / 2.0)[inverse]

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def cascading_randomization(model, x, target="top1", modes=BACKPROP_MODES, random_state=0, absolute=True):
    """Adebayo et al. 2018's model-parameter randomization test, cascading from the top.

    Parameterized layers are re-initialized one at a time from the output towards
    the input (each step keeps the earlier randomizations), with PyTorch's default
    initialization drawn from ``np.random.default_rng(random_state)``. After each step every
    mode's map is compared with the map of the original model by Spearman rank correlation
    (of ``|map|`` max over channels when ``absolute``, as in the paper's figures; of the raw
    signal otherwise), averaged over the samples. A class target is fixed on the original model.

    Returns
    -------
    list of dicts ``{"randomized": layer name or "(none)", mode: correlation, ...}``,
    the first row measured on an unrandomized copy (correlation 1).
    """
    model = _as_model(model)
    t = as_target(target)
    if t.kind == "rank":
        t = Target("class", t.classes(model(x)))  # fixed on the trained model

    def maps(m):
        res = {}
        for mode in modes:
            g = attribute(m, x, t, mode)
            res[mode] = np.abs(g).max(axis=1) if absolute else g
        return res

    reference = maps(model)
    work = copy.deepcopy(model)

    def row(name):
        current = maps(work)
        return {"randomized": name, **{m: float(np.mean([spearman(reference[m][i], current[m][i])
                                                          for i in range(x.shape[0])]))
                                       for m in modes}}

    rows = [row("(none)")]  # measured on the untouched copy: 1 unless something is wrong
    rng = np.random.default_rng(random_state)
    leaves = [(n, layer) for n, layer in work.unique_leaves() if layer.named_parameters()]
    for name, layer in reversed(leaves):
        layer.reset_parameters(rng)
        rows.append(row(name))
    return rows
