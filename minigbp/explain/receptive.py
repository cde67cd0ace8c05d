"""Receptive fields: which input pixels a unit of a layer can see (:func:`receptive_field`).

The recurrence, one axis at a time. Write ``r`` (size), ``j`` (jump) and ``s`` (start) for the
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
"""

from dataclasses import dataclass

import numpy as np

from ..layers import Add, AvgPool2d, BatchNorm2d, Cat, Conv2d, Dropout, Identity, MaxPool2d, ReLU
from ..model import INPUT, Graph
from ..sequential import Sequential
from ..shapes import conv_output_size, pool_output_size

__all__ = ["RF", "receptive_field"]



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


def _geometry(name, layer, asked):
    """``(kernel, stride, padding, dilation, ceil_mode)`` of a spatial layer, or None for layers
    that keep every position where it is; ``ValueError`` naming the node for the others
    (``asked``: the layer :func:`receptive_field` was asked about)."""
    if isinstance(layer, Conv2d):
        return layer.kernel_size, layer.stride, layer.padding, layer.dilation, False
    if isinstance(layer, MaxPool2d):
        return layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode
    if isinstance(layer, AvgPool2d):
        return layer.kernel_size, layer.stride, layer.padding, (1, 1), layer.ceil_mode
    if isinstance(layer, (ReLU, Dropout, BatchNorm2d, Identity, Add, Cat)):
        return None
    kind = type(layer).__name__
    whole = kind in ("AdaptiveAvgPool2d", "Flatten", "Linear")
    raise ValueError(f"receptive_field: layer {name!r} ({kind}) "
                     + ("mixes all spatial positions, so every unit from there on sees the whole input; "
                        if whole else "is not a layer whose receptive field minigbp knows; ")
                     + f"choose a layer before it (asked for {asked!r})")


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

    The recurrence is derived in the module docstring.

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
        geo = _geometry(name, lay, layer)
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
