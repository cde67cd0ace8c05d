"""The fast path: the convolution and max pooling as in :mod:`minigbp.ops`, arranged to move
less memory.

:mod:`minigbp.ops` is the reference: each op's equation, a loop version (``*_naive``) and
a readable vectorized version. For these two ops the layers call this module's functions
instead; each computes the reference's sums and goes to the reference op itself wherever
its arrangement does not apply. Tests hold the two to 1e-12 in float64, op by op and
through whole networks in all three modes, on drawn shapes. ``with mg.fast.reference():``
makes every layer run the reference ops, e.g. to step through them in a debugger.

* **Convolution forward.** The reference gathers every receptive field of the whole batch
  into one matrix (im2col: ``C*HH*WW`` rows, ``N*Ho*Wo`` columns; 115 MB for VGG's first
  64-channel layer) and multiplies once. Here the columns are gathered one block at a
  time, whole images or rows of one image, at most :data:`BLOCK` elements, into one buffer
  that stays in cache for its product; each block's product is written straight into its
  place in the output, so the output needs no transposing copy either.
* **Convolution backward** (the input signal). The reference multiplies
  ``dcols = W^T @ dout`` and adds every kernel tap back into the padded input (col2im:
  ``HH*WW`` strided additions of the whole signal). At stride 1 the backward is itself a
  convolution: with ``P' = D*(HH-1) - P``::

      dx[n, c, y, x] = sum_{f, kh, kw} w[f, c, kh, kw] * dout[n, f, y + P - kh*D, x + Q - kw*E]
                     = sum_{f, kh, kw} w'[c, f, kh, kw] * doutp[n, f, y + kh*D, x + kw*E]

  with ``w'[c, f, kh, kw] = w[f, c, HH-1-kh, WW-1-kw]`` (the filters flipped, in and out
  channels swapped) and ``doutp`` the signal zero-padded by ``P'``: the forward
  convolution of ``dout`` with ``w'`` (:func:`conv2d_forward`). It gathers
  once (im2col) instead of adding back, and its product sums over ``F*HH*WW`` terms
  instead of ``F``. It is taken where that pays (measured): filters that do not widen the
  channels (F <= C; otherwise it gathers more than the reference adds back), and a signal
  with at least as many pixels as there are filters (N*Ho*Wo >= F; ``w'`` is a copy).
* **Max pooling**. Where every window lies inside ``x`` (no padding, no ceil-mode edge
  window), the forward reads the taps as strided views of ``x`` itself and takes each
  window's maximum first, ``best = max_t v_t``, then its switch, the first tap equal to
  it; that is the reference tap loop's rule (the first of tied maxima wins) in three passes
  per tap instead of five. Where a window holds NaN (equal to nothing) it runs the
  reference's tap loop, as it does for windows that reach into the padding. Either way
  each switch is recorded as one int8 tap number ``kh*WW + kw`` instead of an int64 input
  position. When no two windows share an input position (stride >= kernel, no padding or
  dilation: VGG's pooling) no two switches coincide, so the backward's scatter-add is an
  assignment; other windows, and the tie rules other than ``"first"``, go to the
  reference's scatter.

ReLU is not here: its three rules stay in one place, :mod:`minigbp.ops.relu`.
"""

import contextlib
import contextvars

import numpy as np

from . import ops
from .ops.conv import ConvGeometry
from .ops.pool import PoolGeometry, max_taps

__all__ = ["conv2d_forward", "conv2d_backward_data", "maxpool2d_forward", "maxpool2d_backward", "reference"]

_REFERENCE = contextvars.ContextVar("minigbp_reference", default=False)


@contextlib.contextmanager
def reference():
    """Within this block (this thread or task only), layers run the reference ops of :mod:`minigbp.ops`."""
    token = _REFERENCE.set(True)
    try:
        yield
    finally:
        _REFERENCE.reset(token)


# ------------------------------------------------------------------ convolution

BLOCK = 1 << 21
"""Elements of one im2col block of :func:`conv2d_forward` (8 MB in float32): small enough to
stay in the last-level cache between its copy and its product."""


def conv2d_forward(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """:func:`minigbp.ops.conv2d_forward` with the columns gathered one block at a time
    (module docstring). Returns ``out`` (N, F, Ho, Wo) and the reference's cache ``(x, w, b, g)``.

    A block is ``m`` whole images, or ``h`` output rows of one image, whose columns hold at
    most :data:`BLOCK` elements; its product is written straight into ``out``::

        out[n, :, rows] = W[f, (c, kh, kw)] @ cols[(c, kh, kw), (rows, j)] + b[f]

    Every block's product reads all the weights again, so weights larger than a block (VGG's
    512-channel layers) go to the reference, as do grouped convolutions, 1x1 kernels (little
    or nothing to gather) and columns that fit one block.
    """
    g = ConvGeometry(x.shape, w.shape, None if b is None else b.shape, stride, padding, dilation, groups)
    blocks = block_shape(g)
    if _REFERENCE.get() or blocks is None:
        return ops.conv2d_forward(x, w, b, stride, padding, dilation, groups)
    images, rows = blocks
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    K, Ho, Wo = C * HH * WW, g.Ho, g.Wo
    (S, T), (D, E), (P, Q) = g.S, g.D, g.P
    xp = x
    if (P, Q) != (0, 0):
        xp = np.zeros((N, C, H + 2 * P, W + 2 * Q), dtype=x.dtype)
        xp[:, :, P:P + H, Q:Q + W] = x
    sN, sC, sH, sW = xp.strides
    wmat = w.reshape(F, K)
    out = np.empty((N, F, Ho, Wo), dtype=np.result_type(x, w))
    buffer = np.empty(images * K * rows * Wo, dtype=x.dtype)
    for n in range(0, N, images):
        m = min(images, N - n)
        for i in range(0, Ho, rows):
            h = min(rows, Ho - i)
            cols = buffer[:m * K * h * Wo].reshape(m, C, HH, WW, h, Wo)
            np.copyto(cols, np.lib.stride_tricks.as_strided(
                xp[n:, :, i * S:], shape=(m, C, HH, WW, h, Wo),
                strides=(sN, sC, sH * D, sW * E, sH * S, sW * T), writeable=False))
            block = out[n:n + m, :, i:i + h].reshape(m, F, h * Wo)  # a view: whole images or one image's rows
            np.matmul(wmat, cols.reshape(m, K, h * Wo), out=block)
            if b is not None:
                block += b[:, None]
    return out, (x, w, b, g)


def block_shape(g):
    """``(images, rows)`` of one block of :func:`conv2d_forward` for the convolution ``g`` (a
    :class:`~minigbp.ops.conv.ConvGeometry`): output rows of one image (``images == 1``,
    ``rows < Ho``) or whole images (``rows == Ho``); None where it goes to the reference."""
    N, C = g.x_shape[:2]
    F, _, HH, WW = g.w_shape
    K = C * HH * WW  # rows of the columns; a column per output pixel
    if g.G != 1 or (HH, WW) == (1, 1) or N * K * g.Ho * g.Wo <= BLOCK or F * K > BLOCK:
        return None
    rows = min(g.Ho, max(1, BLOCK // (K * g.Wo)))
    images = max(1, BLOCK // (K * g.Ho * g.Wo)) if rows == g.Ho else 1
    return images, rows


def conv2d_backward_data(dout, cache):
    """:func:`minigbp.ops.conv2d_backward_data`; at stride 1, where it pays, the forward
    convolution of ``dout`` with the flipped filters (module docstring). Returns ``dx`` (N, C, H, W).

    Grouped convolutions, and pointwise ones (one product in the reference, nothing to add
    back), go to the reference.
    """
    back = transposed_padding(cache)
    if _REFERENCE.get() or back is None:
        return ops.conv2d_backward_data(dout, cache)
    x, w, b, g = cache
    flipped = np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])  # w'[c, f, kh, kw]
    return conv2d_forward(dout, flipped, None, 1, back, g.D, 1)[0]


def transposed_padding(cache):
    """``P'``, the padding of the transposed convolution, where :func:`conv2d_backward_data`
    takes it (module docstring); None where it goes to the reference."""
    x, w, b, g = cache
    N, C = x.shape[:2]
    F, _, HH, WW = w.shape
    back = (g.D[0] * (HH - 1) - g.P[0], g.D[1] * (WW - 1) - g.P[1])
    pays = (g.S == (1, 1) and g.G == 1 and (HH, WW) != (1, 1) and min(back) >= 0
            and F <= C and N * g.Ho * g.Wo >= F)
    return back if pays else None


# ------------------------------------------------------------------ max pooling

def maxpool2d_forward(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """:func:`minigbp.ops.maxpool2d_forward`, recording int8 tap numbers (module docstring).
    Returns ``out`` (N, C, Ho, Wo) and a :class:`Switches` cache."""
    g = PoolGeometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode, "maxpool2d")
    if _REFERENCE.get() or g.K[0] * g.K[1] > 127:
        return ops.maxpool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode)
    if (g.Hb, g.Wb) == x.shape[2:]:  # every window inside x: read its taps as views of x, no buffer
        best, tap = _max_first(x, g)
        if not np.isnan(best).any():
            return best, Switches(tap, g, x, best)
        xb = x
    else:
        xb = g.buffer(x, -np.inf)
    best, tap = max_taps(xb, g, np.int8)
    return best, Switches(tap, g, x, best)


def _max_first(x, g):
    """Each window's maximum first, ``best = max_t v_t`` over the tap views ``v_t`` of ``x``,
    then its switch: the first tap equal to it, ``tap = min {t : v_t == best}`` (the tap loop's
    rule, the first maximum wins, wherever no window holds NaN; the caller checks)."""
    HH, WW = g.K
    views = [x[(slice(None), slice(None)) + g.tap(kh, kw)] for kh in range(HH) for kw in range(WW)]
    best = views[0].copy()
    for v in views[1:]:
        np.maximum(best, v, out=best)
    tap = np.full(best.shape, len(views) - 1, dtype=np.int8)
    for t in range(len(views) - 2, -1, -1):  # last to first, so the first equal tap writes last
        np.copyto(tap, t, where=views[t] == best)
    return best, tap


class Switches:
    """A max pool's cache: ``tap`` (N, C, Ho, Wo) int8, the tap ``kh*WW + kw`` of each
    window's maximum; the geometry ``g``; the forward input ``x`` and output ``out``.

    It reads as the reference's cache ``(indices, geometry, x, out)`` too (``cache[0]``,
    unpacking), with the flat int64 positions computed from the taps when asked for.
    """

    def __init__(self, tap, g, x, out):
        self.tap, self.g, self.x, self.out = tap, g, x, out

    def reference_cache(self):
        """The reference's cache ``(indices, geometry, x, out)``: ``indices`` the flat input
        positions ``row * W + col`` (int64, PyTorch's ``return_indices``), -1 where a window
        misses the input."""
        return self.g.switches(self.tap), self.g, self.x, self.out

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return self.reference_cache()[i]

    def __iter__(self):  # unpacking computes the positions once, not once per item
        return iter(self.reference_cache())


def maxpool2d_backward(dout, cache, ties="first"):
    """:func:`minigbp.ops.maxpool2d_backward`. Where no two windows share an input position
    (stride >= kernel, no padding or dilation), no two switches coincide either, so the
    reference's scatter-add is an assignment: ``dx[n, c, switch] = dout[n, c, i, j]``, 0
    elsewhere. Other windows, and the tie rules other than ``"first"``, go to the reference."""
    if not isinstance(cache, Switches):
        return ops.maxpool2d_backward(dout, cache, ties)
    g = cache.g
    disjoint = g.S[0] >= g.K[0] and g.S[1] >= g.K[1] and g.P == (0, 0) and g.D == (1, 1)
    if _REFERENCE.get() or ties != "first" or not disjoint:
        return ops.maxpool2d_backward(dout, cache.reference_cache(), ties)
    N, C, H, W = g.x_shape
    plane = np.arange(N * C).reshape(N, C, 1, 1) * (H * W)  # where each (n, c) starts
    dx = np.zeros(N * C * H * W, dtype=dout.dtype)
    dx[(plane + g.switches(cache.tap)).ravel()] = dout.ravel()
    return dx.reshape(g.x_shape)
