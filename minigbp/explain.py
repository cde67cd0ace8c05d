"""Explanations built on the backward machinery: targets, Grad-CAM, SmoothGrad, sanity checks.

Everything here is a small composition of :meth:`Graph.forward` and
:func:`minigbp.model.backward_tape`; the ReLU rules stay in :mod:`minigbp.ops.relu`.

Methods (``method=`` of :func:`attribute`):

* ``"vanilla"``, ``"deconvnet"``, ``"guided"``: the input signal of :func:`minigbp.backprop`.
* ``"gradcam"`` (Selvaraju et al. 2017): with ``A`` the activations of a late layer
  (N, K, h, w) and ``G = dy/dA`` the vanilla gradient of the target score there,
  ``alpha_k = mean_{i,j} G[k, i, j]`` and ``cam = ReLU(sum_k alpha_k A[k])`` (N, h, w),
  upsampled bilinearly to the input size. Returned as (N, 1, H, W).
* ``"guided-gradcam"``: the guided signal times the upsampled ``cam`` (per pixel).

Targets (``target=``; strings are what the command line takes):

================================  ==========================================================
``None``, ``"top1"``              each sample's highest-scoring class
``3``, ``"3"``, ``"class:3"``     class 3 for every sample
``"top:3"``                       three explanations: each sample's 1st, 2nd and 3rd class
``"layer:features.29"``           the sum of that layer's outputs (seed of ones)
``"channel:features.28:17"``      the sum of channel 17 of that layer
``"neuron:features.28:17:5:6"``   the single activation (channel 17, y=5, x=6) of that layer
================================  ==========================================================
"""

import copy
from dataclasses import dataclass

import numpy as np

from .image import bilinear_resize
from .conventions import DEFAULT
from .layers import AdaptiveAvgPool2d, Conv2d, Flatten, ReLU
from .model import Graph, Sequential, backward_tape, forward_nodes, make_seed, seed_rule

__all__ = [
    "Target", "parse_target", "attribute", "gradcam", "smoothgrad", "default_gradcam_layer",
    "cascading_randomization", "spearman", "METHODS",
]

METHODS = ("vanilla", "deconvnet", "guided", "gradcam", "guided-gradcam")


@dataclass(frozen=True)
class Target:
    """What to explain. ``kind``: "class", "rank", "layer", "channel" or "neuron".

    ``index``: the class (kind "class"), the 0-based rank (kind "rank": 0 = top-1),
    the channel (kind "channel"), or ``(channel, y, x)`` (kind "neuron").
    ``layer``: the dotted layer name for "layer", "channel" and "neuron".
    """

    kind: str
    index: object = None
    layer: str = None

    def describe(self):
        if self.kind == "class":
            return f"class {self.index}"
        if self.kind == "rank":
            return "top-1 class" if self.index == 0 else f"class ranked {self.index + 1}"
        if self.kind == "layer":
            return f"layer {self.layer}"
        if self.kind == "channel":
            return f"channel {self.index} of {self.layer}"
        return f"neuron {self.index} of {self.layer}"

    def seed(self, out, rule="one"):
        """The seed array (shaped like ``out``, the start layer's output) for this target.

        ``rule="value"`` (the ``seed`` convention) weights it by ``out`` itself: the
        activation's value instead of 1, as Zeiler & Fergus and iNNvestigate project.
        """
        return seed_rule(self._ones(out), out, rule)

    def _ones(self, out):
        if self.kind in ("class", "channel"):  # a class, or a whole channel of a 4-D output
            return make_seed(out, self.index, self.layer)
        if self.kind == "rank":
            if out.ndim != 2:
                raise ValueError(f"a ranked class target needs (N, classes) outputs, got shape {out.shape}")
            _check_index(self.index, out.shape[1], out.shape, self.describe())
            return make_seed(out, self.classes(out), self.layer)
        if self.kind == "layer":
            return np.ones_like(out)
        if self.kind == "neuron":
            if out.ndim != 4 or len(self.index) != 3:
                raise ValueError(f"a neuron target needs a 4-D layer output, got shape {out.shape}")
            c, y, x = self.index
            for i, size, what in ((c, out.shape[1], "channel"), (y, out.shape[2], "y"), (x, out.shape[3], "x")):
                if not 0 <= i < size:
                    raise ValueError(f"{self.describe()}: {what} {i} out of range for layer output shape {out.shape}")
            seed = np.zeros_like(out)
            seed[:, c, y, x] = 1
            return seed
        raise ValueError(f"unknown target kind {self.kind!r}")

    def classes(self, out):
        """The class index per sample this target selects, or None for layer targets."""
        if self.kind == "class":
            return np.full(out.shape[0], self.index)
        if self.kind == "rank":
            return np.argsort(-out, axis=1, kind="stable")[:, self.index]
        return None


def _check_index(i, size, shape, what):
    if not 0 <= i < size:
        raise ValueError(f"{what}: index {i} out of range for output shape {shape} ({size} along axis 1)")


def parse_target(spec):
    """Turn a target spec (see the module docstring) into a list of :class:`Target`."""
    if spec is None:
        return [Target("rank", 0)]
    if isinstance(spec, Target):
        return [spec]
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        return [Target("class", int(spec))]
    if not isinstance(spec, str):
        raise TypeError(f"target must be None, an int, a Target or a string, got {spec!r}")
    parts = spec.strip().split(":")
    try:
        if parts == ["top1"]:
            return [Target("rank", 0)]
        if len(parts) == 1 and parts[0].isdigit():
            return [Target("class", int(parts[0]))]
        kind, rest = parts[0], parts[1:]
        if kind == "class" and len(rest) == 1:
            return [Target("class", int(rest[0]))]
        if kind == "top" and len(rest) == 1 and int(rest[0]) >= 1:
            return [Target("rank", r) for r in range(int(rest[0]))]
        if kind == "layer" and len(rest) == 1 and rest[0]:
            return [Target("layer", None, rest[0])]
        if kind == "channel" and len(rest) == 2:
            return [Target("channel", int(rest[1]), rest[0])]
        if kind == "neuron" and len(rest) == 4:
            return [Target("neuron", (int(rest[1]), int(rest[2]), int(rest[3])), rest[0])]
    except ValueError:
        pass
    raise ValueError(
        f"bad target {spec!r}; expected top1, top:K, K, class:K, layer:NAME, channel:NAME:C "
        f"or neuron:NAME:C:Y:X"
    )


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


def gradcam(model, x, target=None, layer=None):
    """Grad-CAM maps (N, 1, H, W) for one target (see the module docstring for the equation).

    ``layer`` (a node or block name) defaults to :func:`default_gradcam_layer`. The map is
    not normalized.
    """
    model = _as_model(model)
    layer = model.resolve(default_gradcam_layer(model) if layer is None else layer)
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
    (t,) = _single(target)
    if t.kind not in ("class", "rank"):
        raise ValueError(f"gradcam explains a class score; target {t.describe()} is not a class")
    G = backward_tape(t.seed(out), tape, "vanilla", until=layer)  # dy/dA, (N, K, h, w)
    alpha = G.mean(axis=(2, 3), keepdims=True)  # (N, K, 1, 1)
    cam = np.maximum((alpha * A).sum(axis=1, keepdims=True), 0)  # (N, 1, h, w)
    return bilinear_resize(cam, x.shape[2:]).astype(x.dtype)


def _single(target):
    targets = parse_target(target)
    if len(targets) != 1:
        raise ValueError(f"target {target!r} names {len(targets)} targets; explain them one at a time")
    return targets


def _signal(model, x, target, mode, conventions=DEFAULT):
    (t,) = _single(target)
    model = _as_model(model)
    out, tape = model.forward(x, upto=t.layer)
    return backward_tape(t.seed(out, conventions.seed), tape, mode, conventions=conventions)


def attribute(model, x, target=None, method="guided", gradcam_layer=None, smooth=0, noise_level=0.15,
              seed=0, conventions=DEFAULT):
    """One explanation map for one target.

    Parameters
    ----------
    model : Graph or Sequential
    x : (N, C, H, W) float32/float64, never modified
    target : see the module docstring (one target; "top:K" must be split first)
    method : one of :data:`METHODS`
    gradcam_layer : layer for "gradcam"/"guided-gradcam" (default: :func:`default_gradcam_layer`)
    smooth : if > 0, SmoothGrad with this many noisy samples (see :func:`smoothgrad`)
    noise_level, seed : SmoothGrad's noise scale and random seed
    conventions : :class:`minigbp.Conventions` for the backprop methods (and the guided
        part of guided Grad-CAM); Grad-CAM itself is a plain gradient

    Returns
    -------
    ndarray: (N, C, H, W) for the backprop methods and guided Grad-CAM, (N, 1, H, W) for Grad-CAM.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    model = _as_model(model)
    (t,) = _single(target)
    if t.kind in ("rank", "class"):  # the class is fixed on the clean input: noise cannot change it
        classes = t.classes(model(x))
        return _attribute_classes(model, x, classes, method, gradcam_layer, smooth, noise_level, seed,
                                  conventions)
    if method in ("gradcam", "guided-gradcam"):
        raise ValueError(f"{method} explains a class score; target {t.describe()} is not a class")
    return smoothgrad(lambda z: _signal(model, z, t, method, conventions), x, smooth, noise_level, seed)


def _attribute_classes(model, x, classes, method, layer, smooth, noise_level, seed, conventions=DEFAULT):
    """Per-sample class targets. The backprop methods run all samples in one pass
    (the seed is per sample anyway); Grad-CAM runs one sample at a time."""
    def one(z):
        if method in ("vanilla", "deconvnet", "guided"):
            out, tape = model.forward(z)
            return backward_tape(make_seed(out, classes, seed=conventions.seed), tape, method,
                                 conventions=conventions)
        outs = []
        for n in range(z.shape[0]):
            zn, cn = z[n:n + 1], int(classes[n])
            cam = gradcam(model, zn, cn, layer)
            outs.append(cam if method == "gradcam" else _signal(model, zn, cn, "guided", conventions) * cam)
        return np.concatenate(outs)

    return smoothgrad(one, x, smooth, noise_level, seed)


def smoothgrad(fn, x, n=50, noise_level=0.15, seed=0):
    """SmoothGrad (Smilkov et al. 2017): the mean of ``fn(x + noise)`` over ``n`` draws.

    ``noise ~ N(0, sigma^2)`` with ``sigma = noise_level * (max(x_i) - min(x_i))`` per
    sample ``i``. ``n = 0`` returns ``fn(x)``. Works with any method's map function.
    """
    if n <= 0:
        return fn(x)
    rng = np.random.default_rng(seed)
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


def cascading_randomization(model, x, target=None, methods=("vanilla", "deconvnet", "guided"), seed=0,
                            absolute=True):
    """Adebayo et al. 2018's model-parameter randomization test, cascading from the top.

    Parameterized layers are re-initialized one at a time from the output towards
    the input (each step keeps the earlier randomizations), with PyTorch's default
    initialization. After each step every method's map is compared with the map of
    the original model by Spearman rank correlation (of ``|map|`` max over channels
    when ``absolute``, as in the paper's figures; of the raw signal otherwise),
    averaged over the samples. The target class is fixed on the original model.

    Returns
    -------
    list of dicts ``{"randomized": layer name or "(none)", method: correlation, ...}``,
    the first row measured on an unrandomized copy (correlation 1).
    """
    model = _as_model(model)
    (t,) = _single(target)
    if t.kind in ("rank", "class"):
        classes = t.classes(model(x))  # fixed on the trained model
        t = Target("class", None)

    def maps(m):
        res = {}
        for method in methods:
            if t.kind == "class":
                g = _attribute_classes(m, x, classes, method, None, 0, 0.15, 0)
            else:
                g = attribute(m, x, t, method)
            res[method] = np.abs(g).max(axis=1) if absolute else g
        return res

    reference = maps(model)
    work = copy.deepcopy(model)

    def row(name):
        current = maps(work)
        return {"randomized": name, **{m: float(np.mean([spearman(reference[m][i], current[m][i])
                                                          for i in range(x.shape[0])]))
                                       for m in methods}}

    rows = [row("(none)")]  # measured on the untouched copy: 1 unless something is wrong
    rng = np.random.default_rng(seed)
    leaves = [(n, layer) for n, layer in work.unique_leaves() if layer.named_parameters()]
    for name, layer in reversed(leaves):
        layer.reset_parameters(rng)
        rows.append(row(name))
    return rows
