"""The fast path: the convolution's input signal and max pooling as in :mod:`minigbp.ops`,
arranged to move less memory.

:mod:`minigbp.ops` is the reference: each op's equation, a loop version (``*_naive``) and
a readable vectorized version. For these two ops the layers call this module's functions
instead; each computes the reference's sums and goes to the reference op itself wherever
its arrangement does not apply. Tests hold the two to 1e-12 in float64, op by op and
through whole networks in all three modes, on drawn shapes. ``with mg.fast.reference():``
makes every layer run the reference ops, e.g. to step through them in a debugger.

* **Convolution backward** (the input signal). The reference multiplies
  ``dcols = W^T @ dout`` and adds every kernel tap back into the padded input (col2im:
  ``HH*WW`` strided additions of the whole signal). At stride 1 the backward is itself a
  convolution: with ``P' = D*(HH-1) - P``::

      dx[n, c, y, x] = sum_{f, kh, kw} w[f, c, kh, kw] * dout[n, f, y + P - kh*D, x + Q - kw*E]
                     = sum_{f, kh, kw} w'[c, f, kh, kw] * doutp[n, f, y + kh*D, x + kw*E]

  with ``w'[c, f, kh, kw] = w[f, c, HH-1-kh, WW-1-kw]`` (the filters flipped, in and out
  channels swapped) and ``doutp`` the signal zero-padded by ``P'``: the forward
  convolution of ``dout`` with ``w'`` (:func:`minigbp.ops.conv2d_forward`). It gathers
  once (im2col) instead of adding back, and its product sums over ``F*HH*WW`` terms
  instead of ``F``. It is taken where that pays (measured): filters that do not widen the
  channels (F <= C; otherwise it gathers more than the reference adds back), and a signal
  with at least as many pixels as there are filters (N*Ho*Wo >= F; ``w'`` is a copy).
* **Max pooling**. The forward runs the reference's tap loop (the first of tied maxima
  wins, NaN propagates) on strided views of ``x`` itself when every window lies inside it
  (no padded copy), and records each window's switch as one int8 tap number ``kh*WW + kw``
  instead of computing int64 input positions. When the windows tile the input (kernel ==
  stride, no padding or dilation: VGG's pooling) each tap of the backward is one strided
  write of ``dout`` where the switch is that tap; other windows, and the tie rules other
  than ``"first"``, go to the reference's scatter.

The convolution forward is the reference's (im2col, one product): measured, nothing
arranged differently here was faster. ReLU is not here: its three rules stay in one place,
:mod:`minigbp.ops.relu`.
"""

import contextlib
import contextvars

import numpy as np

from . import ops
from .ops.pool import PoolGeometry, max_taps

__all__ = ["conv2d_backward_data", "maxpool2d_forward", "maxpool2d_backward", "reference"]

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
    return ops.conv2d_forward(dout, flipped, None, 1, back, g.D, 1)[0]


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
    xb = x if (g.Hb, g.Wb) == x.shape[2:] else g.buffer(x, -np.inf)  # no copy if every window is inside x
    best, tap = max_taps(xb, g, np.int8)
    return best, Switches(tap, g, x, best)


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


def maxpool2d_backward(dout, cache, ties="first"):
    """:func:`minigbp.ops.maxpool2d_backward`. Windows that tile the input (kernel == stride,
    no padding or dilation, no ceil-mode edge window) own their taps alone: each tap's view
    of ``dx`` is written once, ``dout`` where the switch is that tap, 0 elsewhere. Other
    windows go to the reference's scatter."""
    if not isinstance(cache, Switches):
        return ops.maxpool2d_backward(dout, cache, ties)
    g = cache.g
    N, C, H, W = g.x_shape
    (K, L), Ho, Wo = g.K, g.Ho, g.Wo
    tiles = g.K == g.S and g.P == (0, 0) and g.D == (1, 1) and Ho * K <= H and Wo * L <= W
    if _REFERENCE.get() or ties != "first" or not tiles:
        return ops.maxpool2d_backward(dout, cache.reference_cache(), ties)
    dx = np.empty(g.x_shape, dtype=dout.dtype)
    dx[:, :, Ho * K:] = 0  # rows and columns no window covers (floor mode)
    dx[:, :, :, Wo * L:] = 0
    zero = np.zeros((), dout.dtype)
    for t in range(K * L):
        kh, kw = divmod(t, L)
        dx[:, :, kh:Ho * K:K, kw:Wo * L:L] = np.where(cache.tap == t, dout, zero)
    return dx
