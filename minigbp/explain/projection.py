"""Zeiler & Fergus projections: what made one unit fire, shown in input pixels.

Zeiler & Fergus (2013, "Visualizing and Understanding Convolutional Networks", Fig. 2)
take one feature map, find its strongest activations over a set of images, and send
each *single* activation back to the input through the deconvnet (every other
activation of the layer set to zero). The projection is cropped to the part of the
input that unit can see, its receptive field, and drawn beside the matching image
patch.

* :func:`minigbp.explain.receptive.receptive_field` -- size, jump and start offset of a
  layer's units (:class:`~minigbp.explain.receptive.RF`);
* :func:`projections` -- the top-k activations of a channel and their projections;
* :func:`projection_figure` -- the grid of projections beside the input patches;
* ``minigbp projections`` -- the command line (``minigbp projections --help``).
"""

import os
from dataclasses import dataclass

import numpy as np

from ..conventions import Conventions
from ..layers import check_input
from ..model import Graph, backward_tape, forward_nodes, prepare
from ..sequential import Sequential
from ..targets import seed_rule
from .receptive import receptive_field

__all__ = ["Projection", "projections", "projection_figure", "layer_activations", "top_k", "grid_shape"]


# ---------------------------------------------------------------------- projections

@dataclass(frozen=True)
class Projection:
    """One top activation and its projection to the input.

    Attributes
    ----------
    image : int            index of the image in the batch given to :func:`projections`
    y, x : int             position of the unit in the layer's output
    activation : float     its value
    box : ((r0, r1), (c0, c1))  its receptive field in the input, clipped (:meth:`RF.box`)
    projection : ndarray (C, r1 - r0, c1 - c0)  the projection, cropped to ``box``
    patch : ndarray (C, r1 - r0, c1 - c0)       the input, cropped to ``box``
    signal : ndarray (C, H, W)                  the whole projection (zero outside ``box``)
    """

    image: int
    y: int
    x: int
    activation: float
    box: tuple
    projection: np.ndarray
    patch: np.ndarray
    signal: np.ndarray


def layer_activations(model, images, layer, channels=None, batch_size=64):
    """``layer``'s output for every image, only ``channels`` (all if None): (N, len(channels), h, w).

    Runs in batches of ``batch_size`` images; raises ``ValueError`` naming the layer
    if its output is not (N, C, h, w), or naming the channel if one is out of range.
    """
    model = model if isinstance(model, Graph) else Sequential(model)
    nodes = model.nodes_through(layer)
    parts = []
    for i in range(0, images.shape[0], batch_size):
        out, _ = forward_nodes(nodes, images[i:i + batch_size])
        if out.ndim != 4:
            raise ValueError(f"projections: layer {layer!r} has output shape {out.shape}, not (N, C, h, w)")
        if channels is not None:
            bad = [c for c in channels if not 0 <= c < out.shape[1]]
            if bad:
                raise ValueError(f"projections: channel {bad[0]} out of range for layer {layer!r}, "
                                 f"which has {out.shape[1]} channels (0..{out.shape[1] - 1})")
            out = out[:, channels]
        parts.append(out)
    return np.concatenate(parts)


def top_k(acts, k):
    """Indices ``(n, y, x)`` of the ``k`` largest values of ``acts`` (N, h, w), largest first.

    Ties go to the smaller ``(n, y, x)`` in lexicographic order (a stable sort of the
    C-order flattening); NaN counts as smallest. Fewer than ``k`` if ``acts`` is smaller.
    """
    flat = acts.reshape(-1)
    key = np.where(np.isnan(flat), -np.inf, flat)
    order = np.argsort(-key, kind="stable")[:k]
    return [tuple(int(v) for v in np.unravel_index(i, acts.shape)) for i in order]


def projections(model, images, layer, channel, k=9, mode="deconvnet", *, batch_size=64, preset=None,
                conventions=None, **switches):
    """Zeiler & Fergus projections of the top-``k`` activations of one channel.

    Parameters
    ----------
    model : Graph or Sequential
    images : ndarray (N, C, H, W) float32/float64 (never modified)
    layer : str
        Name of a layer (or block) with a spatial output before any Flatten/Linear
        (e.g. ``"features.7"``, the digits model's last conv ReLU; ``"layer2"`` in a ResNet).
    channel : int
        The feature map.
    k : int
        How many activations (the strongest over all images *and* positions: one
        image can give several). Fewer if there are fewer positions.
    mode : "deconvnet" (Zeiler & Fergus, default) | "guided" | "vanilla"
    batch_size : int
        Images per forward/backward pass.
    preset, conventions, **switches : as in :func:`minigbp.backprop`, with one difference:
        without a preset or conventions the ``seed`` convention is ``"value"``. The seed placed
        at the chosen unit (every other unit of the layer zero) is then the activation's own
        value, what the deconvnet of Zeiler & Fergus projects, so projections of stronger
        activations are stronger; ``seed="one"`` gives :func:`minigbp.backprop`'s one-hot 1.
        Every layer's backward is linear in the seed except at ReLUs, where only its sign
        matters, so the two differ by the factor ``activation`` when it is positive.

    Returns
    -------
    list of :class:`Projection`, strongest first.

    Notes
    -----
    Ranking: every activation ``A[n, channel, y, x]`` over all images and positions,
    largest first; ties go to the smaller ``(n, y, x)`` in lexicographic order (image
    first, then row, then column). Each projection runs its own image forward again to
    get the max-pooling switches, seeds the one unit and sends the seed down in
    ``mode``; the result is zero outside the unit's receptive field (:meth:`RF.box`),
    to which ``projection`` and ``patch`` are cropped.
    """
    check_input(images, "projections", ndim=4)
    model, rules = prepare(model, mode, preset, conventions, switches, base=Conventions(seed="value"))
    _check_counts(channel, k, batch_size)
    rf = receptive_field(model, layer, images.shape)  # errors for layers after a Flatten come first
    acts = layer_activations(model, images, layer, [int(channel)], batch_size)[:, 0]
    nodes = model.nodes_through(layer)
    found = []
    picks = top_k(acts, k)
    for b in range(0, len(picks), batch_size):
        chunk = picks[b:b + batch_size]
        idx = np.array([n for n, _, _ in chunk])
        out, tape = forward_nodes(nodes, images[idx])
        ones = np.zeros_like(out)
        for i, (n, y, x) in enumerate(chunk):
            ones[i, channel, y, x] = 1  # one unit per image, every other unit of the layer zero
        signal = backward_tape(seed_rule(ones, out, rules.seed), tape, mode, conventions=rules)
        for i, (n, y, x) in enumerate(chunk):
            (r0, r1), (c0, c1) = box = rf.box(y, x)
            found.append(Projection(n, y, x, float(acts[n, y, x]), box, signal[i, :, r0:r1, c0:c1].copy(),
                                    images[n, :, r0:r1, c0:c1].copy(), signal[i]))
    return found


def _check_counts(channel, k, batch_size):
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
        raise TypeError(f"projections: channel must be an int, got {channel!r}")
    for name, v in (("k", k), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"projections: {name} must be a positive int, got {v!r}")


# --------------------------------------------------------------------------- figure

def _embed(crop, rf, p, fill):
    """Place a (clipped) crop (h, w[, 3]) where it belongs in a full receptive-field canvas."""
    canvas = np.full(tuple(rf.size) + crop.shape[2:], fill, dtype=np.float64)
    (r0, _), (c0, _) = p.box
    (u0, _), (v0, _) = rf.box(p.y, p.x, clip=False)
    canvas[r0 - u0:r0 - u0 + crop.shape[0], c0 - v0:c0 - v0 + crop.shape[1]] = crop
    return canvas


def _display(a, how, image_range=None):
    """(C, h, w) -> (h, w) or (h, w, 3) in [0, 1]."""
    from .visualize import normalize

    if image_range is not None:  # input patches: the whole image's range, so patches compare
        lo, hi = image_range
        a = (np.asarray(a, np.float64) - lo) / (hi - lo) if hi > lo else np.zeros(a.shape)
    else:
        a = normalize(a, how)
    return a[0] if a.shape[0] == 1 else np.clip(a[:3].transpose(1, 2, 0), 0, 1)


def grid_shape(k):
    """Rows and columns of the square-ish grid holding ``k`` panels (3x3 for 9)."""
    cols = int(np.ceil(np.sqrt(k)))
    return int(np.ceil(k / cols)), cols


def projection_figure(results, rf, images, path, title=None, norm="minmax", panel_size=1.0, dpi=100):
    """Save Zeiler & Fergus's Fig. 2 layout for one channel: projections | input patches.

    Parameters
    ----------
    results : list of :class:`Projection` (from :func:`projections`)
    rf : :class:`RF` of the layer (with its input size)
    images : the (N, C, H, W) array ``results`` index into (patches are scaled by their
        whole image's range, so they look like the image)
    path : where to write the PNG
    title : label over the projections (default "projections"); "input patches" labels the others
    norm : normalization of each projection (:func:`minigbp.visualize.normalize`)

    Returns
    -------
    int, the number of panels drawn (two per result). The figure is
    ``(2 * cols + 0.5) * panel_size`` by ``rows * panel_size + 0.4`` inches at ``dpi``,
    with ``rows, cols = grid_shape(len(results))``. Receptive fields cut by the image
    border are drawn in place on a full-size canvas (gray outside the image).
    Uses matplotlib's object API (no pyplot state).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, cols = grid_shape(max(len(results), 1))
    fig = Figure(figsize=((2 * cols + 0.5) * panel_size, rows * panel_size + 0.4))
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(rows, 2 * cols + 1, width_ratios=[1] * cols + [0.5] + [1] * cols,
                          left=0.01, right=0.99, bottom=0.01, top=1 - 0.4 / (rows * panel_size + 0.4),
                          wspace=0.06, hspace=0.06)
    drawn = 0
    for i, p in enumerate(results):
        r, c = divmod(i, cols)
        img = images[p.image]
        for offset, picture in ((0, _display(p.projection, norm)),
                                (cols + 1, _display(p.patch, norm, (float(img.min()), float(img.max()))))):
            ax = fig.add_subplot(gs[r, c + offset])
            ax.imshow(_embed(picture, rf, p, 0.5), cmap="gray" if picture.ndim == 2 else None,
                      vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            drawn += 1
    top = 1 - 0.2 / (rows * panel_size + 0.4)
    left_center, right_center = (cols / 2) / (2 * cols + 0.5), (cols + 0.5 + cols / 2) / (2 * cols + 0.5)
    fig.text(0.01 + 0.98 * left_center, top, title or "projections", ha="center", va="center", fontsize=8)
    fig.text(0.01 + 0.98 * right_center, top, "input patches", ha="center", va="center", fontsize=8)
    fig.savefig(os.fspath(path), dpi=dpi)
    return drawn


# ---------------------------------------------------------------------- command line
