"""Zeiler & Fergus projections: what made one unit fire, shown in input pixels.

Zeiler & Fergus (2013, "Visualizing and Understanding Convolutional Networks", Fig. 2)
take one feature map, find its strongest activations over a set of images, and send
each *single* activation back to the input through the deconvnet (every other
activation of the layer set to zero). The projection is cropped to the part of the
input that unit can see, its receptive field, and drawn beside the matching image
patch.

* :func:`receptive_field` -- size, jump and start offset of a layer's units (:class:`RF`);
* :func:`projections` -- the top-k activations of a channel and their projections;
* :func:`projection_figure` -- the grid of projections beside the input patches;
* ``minigbp projections`` -- the command line (``minigbp projections --help``).
"""

import os
from dataclasses import dataclass

import numpy as np

from ..conventions import Conventions
from ..layers import Add, AvgPool2d, BatchNorm2d, Cat, Conv2d, Dropout, Identity, MaxPool2d, ReLU, check_input
from ..model import INPUT, Graph, Sequential, backward_tape, forward_nodes, prepare
from ..targets import seed_rule
from ..shapes import conv_output_size, pool_output_size

__all__ = ["RF", "receptive_field", "Projection", "projections", "projection_figure", "layer_activations",
           "top_k", "grid_shape"]


# ------------------------------------------------------------------ receptive field

@dataclass(frozen=True)
class RF:
    """Receptive field of the units of one layer, per spatial axis ``(height, width)``.

    Attributes
    ----------
    layer : str
        The dotted name of the layer.
    size : (int, int)
        How many input pixels, from the first tap to the last, one unit spans.
    jump : (int, int)
        Input pixels between the receptive fields of two adjacent units.
    start : (int, int)
        Input coordinate of the first tap of unit ``(0, 0)``; negative when
        padding puts it outside the image.
    input_size, output_size : (int, int) or None
        The input's and the layer's spatial size, when the input size was given
        to :func:`receptive_field` (needed to clip boxes and for :meth:`footprint`).
    steps : tuple
        Per node the layer depends on, in order: ``(name, inputs, geometry)`` with
        ``geometry = (kernel, stride, padding, dilation, ceil_mode)`` (each a pair) or
        None for layers that keep positions (ReLU, BatchNorm, Add, Cat, ...); used by
        :meth:`footprint`.

    Unit ``(y, x)`` spans input rows ``start[0] + y * jump[0]`` up to (excluding)
    ``start[0] + y * jump[0] + size[0]``, and likewise columns (see :meth:`box`).
    """

    layer: str
    size: tuple
    jump: tuple
    start: tuple
    input_size: tuple = None
    output_size: tuple = None
    steps: tuple = ()

    def box(self, y, x, clip=True):
        """Input box of unit ``(y, x)``: ``((r0, r1), (c0, c1))``, half-open ranges.

        The unclipped box is ``[start + y * jump, start + y * jump + size)`` per axis.
        With ``clip`` (and a known ``input_size``) it is intersected with the input,
        ``[0, H) x [0, W)``, which is where a projection can be non-zero.

        Dilated kernels leave holes inside the box, and at the far edge a box can
        reach input pixels that floor-mode rounding dropped: the box is a (tight,
        for units whose taps all land inside every layer) superset of the pixels the
        unit depends on. :meth:`footprint` gives those exactly.
        """
        self._check_unit(y, x)
        out = []
        for a, (st, j, s) in enumerate(zip(self.start, self.jump, self.size)):
            i = (y, x)[a]
            lo, hi = st + i * j, st + i * j + s
            if clip and self.input_size is not None:
                lo, hi = max(lo, 0), min(hi, self.input_size[a])
            out.append((int(lo), int(hi)))
        return tuple(out)

    def footprint(self, y, x):
        """The input pixels unit ``(y, x)`` depends on: ``(rows, cols)`` boolean masks (H,), (W,).

        Computed exactly, node by node from the top: unit ``o`` of a layer reads the
        positions ``o * S - P + t * D`` (``t = 0..K-1``) of the layer below that exist
        (``0 <= . < size below``); a value read by several nodes depends on the union of
        what they read. Every layer acts on the two axes independently, so the footprint
        is the outer product ``rows[:, None] & cols[None, :]``.
        """
        if self.input_size is None:
            raise ValueError(f"receptive field of {self.layer!r}: footprint needs the input size; "
                             f"pass input_size to receptive_field")
        self._check_unit(y, x)
        masks = []
        for a in range(2):
            sizes = _sizes(self.steps, self.input_size[a], a)
            need = {self.steps[-1][0]: np.zeros(sizes[self.steps[-1][0]], bool)}
            need[self.steps[-1][0]][(y, x)[a]] = True
            for name, inputs, geo in reversed(self.steps):
                mask = need.pop(name)
                for v in inputs:
                    below = need.setdefault(v, np.zeros(sizes[v], bool))
                    if geo is None:
                        below |= mask
                        continue
                    K, S, P, D, _ = geo
                    o = np.flatnonzero(mask)
                    taps = (o[:, None] * S[a] - P[a] + np.arange(K[a])[None, :] * D[a]).ravel()
                    below[taps[(taps >= 0) & (taps < sizes[v])]] = True
            masks.append(need[INPUT])
        return tuple(masks)

    def _check_unit(self, y, x):
        if self.output_size is not None:
            for i, n, what in ((y, self.output_size[0], "y"), (x, self.output_size[1], "x")):
                if not 0 <= i < n:
                    raise ValueError(f"layer {self.layer!r}: {what}={i} out of range for its "
                                     f"{self.output_size[0]}x{self.output_size[1]} output")


def _out_size(H, K, S, P, D, ceil_mode):
    return pool_output_size(H, K, S, P, D, ceil_mode) if ceil_mode else conv_output_size(H, K, S, P, D)


def _sizes(steps, n, a):
    """``{value name: size along axis a}`` for an input of size ``n`` (None where it cannot run)."""
    sizes = {INPUT: n}
    for name, inputs, geo in steps:
        below = [sizes[v] for v in inputs]
        if geo is None:
            sizes[name] = below[0] if len(set(below)) == 1 else None
        else:
            K, S, P, D, ceil = geo
            sizes[name] = None if below[0] is None else _out_size(below[0], K[a], S[a], P[a], D[a], ceil)
        if sizes[name] is None or sizes[name] < 1:
            return {**sizes, name: None}
    return sizes


def _geometry(layer):
    """``(kernel, stride, padding, dilation, ceil_mode)`` of a spatial layer, or None for layers
    that keep every position where it is."""
    if isinstance(layer, Conv2d):
        return layer.kernel_size, layer.stride, layer.padding, layer.dilation, False
    if isinstance(layer, MaxPool2d):
        return layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode
    if isinstance(layer, AvgPool2d):
        return layer.kernel_size, layer.stride, layer.padding, (1, 1), layer.ceil_mode
    if isinstance(layer, (ReLU, Dropout, BatchNorm2d, Identity, Add, Cat)):
        return None
    raise TypeError(type(layer).__name__)


def receptive_field(model, layer, input_size=None):
    """Receptive field of the units of ``layer`` (a dotted name, e.g. ``"features.7"``).

    Parameters
    ----------
    model : Graph or Sequential (or a single layer)
    layer : str
        The layer whose units are asked about (a block such as ``"layer2"``: its output).
    input_size : (H, W), or an input shape (C, H, W) / (N, C, H, W), optional
        Needed to clip :meth:`RF.box` to the image and for :meth:`RF.footprint`.

    Returns
    -------
    RF

    Raises
    ------
    ValueError
        ``layer`` does not exist, or a layer it depends on mixes all positions
        (``AdaptiveAvgPool2d``, ``Flatten``, ``Linear``: the receptive field is then the
        whole input) or is not a layer this function knows; the message names it.

    Notes
    -----
    One axis at a time. Write ``r`` (size), ``j`` (jump) and ``s`` (start) for the
    layer *below* a convolution or pooling with kernel ``K``, stride ``S``, padding
    ``P`` and dilation ``D``, and assume unit ``i`` below sees the input pixels
    ``s + i*j .. s + i*j + r - 1``. At the input itself ``r = 1, j = 1, s = 0``.

    Unit ``o`` of the new layer reads the units ``i = o*S - P + t*D``, ``t = 0..K-1``
    below (padding shifts the window left by ``P``), i.e. ``i`` from ``o*S - P`` to
    ``o*S - P + D(K-1)``. Its first input pixel is the first pixel of the first
    unit, its last pixel the last pixel of the last unit:

        first(o) = s + (o*S - P) j                     = (s - P j) + o (S j)
        last(o)  = s + (o*S - P + D(K-1)) j + r - 1

    Reading off ``first(o) = s' + o j'`` and ``last(o) - first(o) + 1 = r'``:

        j' = j S                 (adjacent units are S units apart below)
        r' = r + D(K-1) j        (the kernel's extent D(K-1)+1, in units j apart)
        s' = s - P j             (padding moves the first tap left)

    ReLU, Dropout, BatchNorm and Identity keep ``(r, j, s)``. Where branches meet (Add,
    Cat) a unit sees what any branch sees: the branches must agree on ``j`` (they do in
    ResNet and DenseNet), and the box is the union, ``s' = min s_k`` and
    ``r' = max (s_k + r_k) - s'``. Ceil mode only adds a last unit at the far edge, so
    it changes the output size, not the recurrence. Pooling padding is ``-inf`` (max) or
    zeros (average): it can never contribute, which clipping the box to the input
    accounts for.

    Examples
    --------
    >>> import minigbp as mg
    >>> rf = receptive_field(mg.zoo.digits(pretrained=False), "features.7", input_size=(32, 32))
    >>> rf.size, rf.jump, rf.start
    ((18, 18), (4, 4), (-7, -7))
    >>> rf.box(0, 0), rf.box(3, 4)
    (((0, 11), (0, 11)), ((5, 23), (9, 27)))
    """
    model = model if isinstance(model, Graph) else Sequential(model)
    fields = {INPUT: ((1, 1), (1, 1), (0, 0))}  # value -> (size, jump, start), per axis
    steps = []
    for name, lay, inputs in model.nodes_through(layer):
        try:
            geo = _geometry(lay)
        except TypeError:
            kind = type(lay).__name__
            whole = kind in ("AdaptiveAvgPool2d", "Flatten", "Linear")
            raise ValueError(
                f"receptive_field: layer {name!r} ({kind}) "
                + ("mixes all spatial positions, so every unit from there on sees the whole input; "
                   if whole else "is not a layer whose receptive field minigbp knows; ")
                + f"choose a layer before it (asked for {layer!r})") from None
        below = [fields[v] for v in inputs]
        if geo is None:
            fields[name] = _union(name, below)
        else:
            (size, jump, start), (K, S, P, D, _) = below[0], geo
            fields[name] = tuple(zip(*[(size[a] + D[a] * (K[a] - 1) * jump[a], jump[a] * S[a],
                                        start[a] - P[a] * jump[a]) for a in range(2)]))
        steps.append((name, tuple(inputs), geo))
    size, jump, start = fields[steps[-1][0]]
    insize = outsize = None
    if input_size is not None:
        insize = tuple(int(v) for v in tuple(input_size)[-2:])
        outsize = tuple(_sizes(steps, insize[a], a).get(steps[-1][0]) for a in range(2))
        if any(o is None or o < 1 for o in outsize):
            raise ValueError(f"receptive_field: input {insize[0]}x{insize[1]} is too small for layer {layer!r}")
    return RF(str(layer), tuple(size), tuple(jump), tuple(start), insize, outsize, tuple(steps))


def _union(name, fields):
    """Where branches meet, a unit sees the union of what each branch's unit sees (same jump)."""
    sizes, jumps, starts = zip(*fields)
    if len(set(jumps)) > 1:
        raise ValueError(f"receptive_field: the branches meeting at {name!r} step through the input at "
                         f"different rates {sorted(set(jumps))}; their units are not aligned")
    start = tuple(min(s[a] for s in starts) for a in range(2))
    size = tuple(max(s[a] + r[a] for s, r in zip(starts, sizes)) - start[a] for a in range(2))
    return size, jumps[0], start


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
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
        raise TypeError(f"projections: channel must be an int, got {channel!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"projections: k must be a positive int, got {k!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"projections: batch_size must be a positive int, got {batch_size!r}")
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
