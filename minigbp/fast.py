"""The fast path: convolution and max pooling as in :mod:`minigbp.ops`, arranged to move
less memory, with their copies split over threads.

:mod:`minigbp.ops` is the reference: each op's equation, a loop version (``*_naive``) and
a readable vectorized version. The layers call this module's functions instead; each
computes the reference's sums and goes to the reference op itself wherever its arrangement
does not apply. Tests hold the two to 1e-12 in float64, op by op and through whole networks
in all three modes, on drawn shapes. ``with mg.fast.reference():`` makes every layer run
the reference ops, e.g. to step through them in a debugger.

NumPy runs a matrix product on all cores (its BLAS) but a copy or an addition on one.
Between two products the reference spends its time in such work: gathering receptive
fields (im2col), adding them back (col2im), pooling's taps; and in fresh allocations as
large as a layer times its kernel area, which the operating system fills page by page.
Here that work is cut into blocks of channels, one per thread (NumPy releases the GIL
inside its loops), the largest temporary lives in a scratch buffer reused from call to
call, and only the matrix products run whole:

* **Convolution forward**: each thread pads its channels and gathers their receptive
  fields into its rows of ``cols``; one product ``W @ cols``; each thread adds the bias to
  its output channels and moves them to (N, F, Ho, Wo).
* **Convolution backward** (the input signal): one product ``dcols = W^T @ dout``; each
  thread adds its channels' taps back into their padded input (col2im) and crops them.
  At stride 1 the backward is itself a convolution: with ``P' = D*(HH-1) - P``::

      dx[n, c, y, x] = sum_{f, kh, kw} w[f, c, kh, kw] * dout[n, f, y + P - kh*D, x + Q - kw*E]
                     = sum_{f, kh, kw} w'[c, f, kh, kw] * doutp[n, f, y + kh*D, x + kw*E]

  with ``w'[c, f, kh, kw] = w[f, c, HH-1-kh, WW-1-kw]`` (the filters flipped, in and out
  channels swapped) and ``doutp`` the signal zero-padded by ``P'``: the forward above,
  run on ``dout`` with ``w'``. It gathers instead of adding back, and its product sums over
  ``F*HH*WW`` terms instead of ``F``. It is taken where that pays: filters that do not widen
  the channels (F <= C), and a signal large next to the filters (N*Ho*Wo >= 8F), since ``w'``
  is a copy.
* **Max pooling whose windows tile the input** (kernel == stride, no padding, no dilation,
  every window inside the input; VGG's and most networks' pooling): window ``(i, j)`` is
  ``x[n, c, i*K:(i+1)*K, j*L:(j+1)*L]``, so the taps are strided views of ``x`` itself,
  with no padded buffer. The tap loop is the reference's (the first of tied maxima wins,
  NaN propagates); the switch is stored as one int8 tap number ``kh*L + kw`` per window
  instead of an int64 input position. The backward puts ``dout`` at each window's switch;
  windows never overlap, so nothing adds up. A tie rule other than ``"first"`` goes to
  the reference.

ReLU is not here: its three rules stay in one place, :mod:`minigbp.ops.relu`.

The number of threads is :func:`threads`: the ``OMP_NUM_THREADS`` environment variable if
set (the variable NumPy's BLAS and PyTorch read), otherwise the cores this process may use.
Arrays smaller than :data:`MIN_SPLIT` elements are not split.
"""

import contextlib
import contextvars
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import ops
from .ops.conv import ConvGeometry
from .ops.pool import PoolGeometry

__all__ = ["conv2d_forward", "conv2d_backward_data", "maxpool2d_forward", "maxpool2d_backward",
           "reference", "threads"]

MIN_SPLIT = 1 << 16
"""Arrays with fewer elements run in the calling thread (a thread hand-off costs more)."""

_REFERENCE = contextvars.ContextVar("minigbp_reference", default=False)


@contextlib.contextmanager
def reference():
    """Within this block (this thread or task only), layers run the reference ops of :mod:`minigbp.ops`."""
    token = _REFERENCE.set(True)
    try:
        yield
    finally:
        _REFERENCE.reset(token)


# ---------------------------------------------------------------------- threads

def threads():
    """How many threads the fast path splits work over (module docstring)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.strip().isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


_pools = {}  # threads -> ThreadPoolExecutor; a forked child starts with none (threads do not survive fork)
os.register_at_fork(after_in_child=_pools.clear)


def _each_block(n, size, work):
    """Call ``work(block)`` for slices ``block`` that cut ``range(n)`` into one piece per thread
    (one piece if the array has fewer than :data:`MIN_SPLIT` elements); wait for all."""
    k = min(threads(), n) if size >= MIN_SPLIT else 1
    bounds = [n * i // k for i in range(k + 1)]
    blocks = [slice(a, b) for a, b in zip(bounds, bounds[1:])]
    if k == 1:
        work(blocks[0])
        return
    pool = _pools.get(k) or _pools.setdefault(k, ThreadPoolExecutor(k, thread_name_prefix="minigbp"))
    for future in [pool.submit(work, block) for block in blocks]:
        future.result()  # re-raises a block's error here


# -------------------------------------------------------------------- scratch

_scratch = threading.local()


def _scratch_array(shape, dtype):
    """An uninitialized array in this thread's scratch buffer, valid until the next call.

    The big temporaries (the receptive fields of a convolution, their signals in the
    backward pass) are as large as a network's largest layer times the kernel area; a
    fresh allocation of that size costs the operating system a page fault per page on
    every call. One buffer per thread, grown as needed and reused, avoids that.
    """
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.size < n:
        buf = _scratch.buf = np.empty(n, dtype=np.uint8)
    return buf[:n].view(dtype).reshape(shape)


# ------------------------------------------------------------------ convolution

def _fast_conv(g, w):
    return not _REFERENCE.get() and g.G == 1 and not (w.shape[2:] == (1, 1) and g.S == (1, 1) and g.P == (0, 0))


def conv2d_forward(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """:func:`minigbp.ops.conv2d_forward`, with the gathering and the bias split over threads.

    Returns ``out`` (N, F, Ho, Wo) and the reference's cache ``(x, w, b, geometry)``.
    Grouped and pointwise convolutions (the reference is one product there) go to the reference.
    """
    g = ConvGeometry(x.shape, w.shape, None if b is None else b.shape, stride, padding, dilation, groups)
    if not _fast_conv(g, w):
        return ops.conv2d_forward(x, w, b, stride, padding, dilation, groups)
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    (S, T), (D, E), (P, Q) = g.S, g.D, g.P
    cols = _scratch_array((C, HH, WW, N, g.Ho, g.Wo), x.dtype)  # cols[(c, kh, kw), (n, i, j)]

    def gather(c):
        xp = np.zeros((N, c.stop - c.start, H + 2 * P, W + 2 * Q), dtype=x.dtype)
        xp[:, :, P:P + H, Q:Q + W] = x[:, c]
        sN, sC, sH, sW = xp.strides
        np.copyto(cols[c], np.lib.stride_tricks.as_strided(
            xp, shape=(c.stop - c.start, HH, WW, N, g.Ho, g.Wo), strides=(sC, sH * D, sW * E, sN, sH * S, sW * T)))

    _each_block(C, cols.size, gather)
    prod = np.matmul(w.reshape(F, -1), cols.reshape(C * HH * WW, -1)).reshape(F, N, g.Ho, g.Wo)
    out = prod.transpose(1, 0, 2, 3) if N == 1 else np.empty((N, F, g.Ho, g.Wo), dtype=x.dtype)

    def finish(f):
        if b is not None:
            prod[f] += b[f, None, None, None]
        if N > 1:
            out[:, f] = prod[f].transpose(1, 0, 2, 3)

    _each_block(F, prod.size, finish)
    return out, (x, w, b, g)


def conv2d_backward_data(dout, cache):
    """:func:`minigbp.ops.conv2d_backward_data`, with col2im split over threads. Returns ``dx`` (N, C, H, W)."""
    x, w, b, g = cache
    if not _fast_conv(g, w):
        return ops.conv2d_backward_data(dout, cache)
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    (S, T), (D, E), (P, Q) = g.S, g.D, g.P
    back = (D * (HH - 1) - P, E * (WW - 1) - Q)  # P', the padding of the transposed convolution
    if g.S == (1, 1) and min(back) >= 0 and F <= C and N * g.Ho * g.Wo >= 8 * F:
        flipped = np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])  # w'[c, f, kh, kw]
        return conv2d_forward(dout, flipped, None, 1, back, g.D, 1)[0]
    dmat = dout.transpose(1, 0, 2, 3).reshape(F, -1)  # (F, N*Ho*Wo); a copy only when N > 1
    dcols = _scratch_array((C, HH, WW, N, g.Ho, g.Wo), dout.dtype)
    np.matmul(w.reshape(F, -1).T, dmat, out=dcols.reshape(C * HH * WW, -1))
    dx = np.empty(x.shape, dtype=dout.dtype)

    def scatter(c):
        dxp = np.zeros((c.stop - c.start, N, H + 2 * P, W + 2 * Q), dtype=dout.dtype)
        for kh in range(HH):
            for kw in range(WW):
                rows = slice(kh * D, kh * D + (g.Ho - 1) * S + 1, S)
                cols = slice(kw * E, kw * E + (g.Wo - 1) * T + 1, T)
                dxp[:, :, rows, cols] += dcols[c, kh, kw]
        dx[:, c] = dxp[:, :, P:P + H, Q:Q + W].transpose(1, 0, 2, 3)

    _each_block(C, dcols.size, scatter)
    return dx


# ------------------------------------------------------------------ max pooling

def _tiles(g):
    """Do the windows tile the input (kernel == stride, no padding or dilation, all inside)?"""
    H, W = g.x_shape[2:]
    return (g.K == g.S and g.P == (0, 0) and g.D == (1, 1)
            and g.Ho * g.K[0] <= H and g.Wo * g.K[1] <= W and g.K[0] * g.K[1] <= 127)


def _tap_view(a, g, kh, kw):
    """Tap ``(kh, kw)`` of every tiling window: a strided (N, C, Ho, Wo) view of ``a``."""
    (K, L), Ho, Wo = g.K, g.Ho, g.Wo
    return a[:, :, kh:kh + (Ho - 1) * K + 1:K, kw:kw + (Wo - 1) * L + 1:L]


def maxpool2d_forward(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """:func:`minigbp.ops.maxpool2d_forward`; windows that tile the input run the reference's
    tap loop on views of ``x``, split over threads (module docstring). Returns ``out``
    (N, C, Ho, Wo) and a cache for :func:`maxpool2d_backward`."""
    g = PoolGeometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode, "maxpool2d")
    if _REFERENCE.get() or not _tiles(g):
        return ops.maxpool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode)
    N, C = x.shape[:2]
    best = np.empty((N, C, g.Ho, g.Wo), dtype=x.dtype)
    tap = np.zeros((N, C, g.Ho, g.Wo), dtype=np.int8)

    def work(c):
        xc, bc, tc = x[:, c], best[:, c], tap[:, c]
        bc[...] = _tap_view(xc, g, 0, 0)
        for t in range(1, g.K[0] * g.K[1]):
            v = _tap_view(xc, g, *divmod(t, g.K[1]))
            take = (v > bc) | np.isnan(v)       # the reference's rule, tap by tap
            np.copyto(bc, v, where=take)
            np.copyto(tc, t, where=take)

    _each_block(C, x.size, work)
    return best, Switches(tap, g, x, best)


class Switches:
    """A tiling max pool's cache: ``tap`` (N, C, Ho, Wo) int8, the tap ``kh*L + kw`` of each
    window's first maximum; the geometry ``g``; the forward input ``x`` and output ``out``.

    It reads as the reference's cache ``(indices, geometry, x, out)`` too (``cache[0]``,
    unpacking), the flat int64 positions computed from the taps when asked for.
    """

    def __init__(self, tap, g, x, out):
        self.tap, self.g, self.x, self.out = tap, g, x, out

    def reference_cache(self):
        """The reference's cache ``(indices, geometry, x, out)``, ``indices`` the flat input
        positions ``row * W + col`` (int64, PyTorch's ``return_indices``)."""
        (K, L), W = self.g.K, self.g.x_shape[3]
        rows = np.arange(self.g.Ho)[:, None] * K + self.tap // L
        cols = np.arange(self.g.Wo)[None, :] * L + self.tap % L
        return rows.astype(np.int64) * W + cols, self.g, self.x, self.out

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return self.reference_cache()[i]


def maxpool2d_backward(dout, cache, ties="first"):
    """:func:`minigbp.ops.maxpool2d_backward`: ``dout`` goes to each window's switch."""
    if not isinstance(cache, Switches):
        return ops.maxpool2d_backward(dout, cache, ties)
    if _REFERENCE.get() or ties != "first":
        return ops.maxpool2d_backward(dout, cache.reference_cache(), ties)
    g = cache.g
    dx = np.zeros(g.x_shape, dtype=dout.dtype)

    def work(c):
        dc, tc, dxc = dout[:, c], cache.tap[:, c], dx[:, c]
        for t in range(g.K[0] * g.K[1]):
            np.copyto(_tap_view(dxc, g, *divmod(t, g.K[1])), dc, where=tc == t)

    _each_block(g.x_shape[1], dx.size, work)
    return dx
