"""Max, average and adaptive-average pooling, naive and vectorized.

Shapes: input ``x`` (N, C, H, W); output (N, C, Ho, Wo) with ``Ho``, ``Wo`` from
:func:`minigbp.shapes.pool_output_size`. Window ``(i, j)`` covers the input taps
``(i*S + kh*D - P, j*T + kw*E - Q)`` for ``kh < HH``, ``kw < WW`` (stride
``(S, T)``, dilation ``(D, E)``, padding ``(P, Q)``).

Max pooling (PyTorch CPU semantics, tap by tap in row-major window order)::

    best = -inf; arg = first tap inside the input
    for each tap v inside the input:
        if v > best or v is NaN: best, arg = v, tap
    out[n, c, i, j] = best

so padding acts as -inf (it is never chosen), the *first* of tied maxima wins, and
NaN propagates (the last NaN in the window is the recorded position). With dilation a
window can miss the input altogether: it outputs -inf, records position -1 and sends
no signal back (PyTorch records an out-of-range index there).
Backward routes the signal to the recorded position (the "switch"); windows that
overlap add up there::

    dx[n, c, arg] += dout[n, c, i, j]

Average pooling::

    out[n, c, i, j] = (sum of the window's taps inside the input) / divisor(i, j)

where, as in PyTorch, the window is first clipped to ``[-P, H + P)`` and
``divisor`` is its area then (``count_include_pad=True``) or the area of the
part inside the input (``False``). Backward spreads ``dout / divisor`` evenly
over the taps inside the input.

Pooling is the same in every backward mode (the switches come from the forward pass).

Tied maxima are a convention (``ties`` of the max-pool backward): ``"first"`` routes
to the first maximum in window order (PyTorch CPU; the default), ``"last"`` to the
last one, ``"split"`` shares ``dout`` equally among all of them. Windows whose maximum
is NaN, or that miss the input, keep the recorded position whatever ``ties`` says.
"""

import numpy as np

from ..shapes import adaptive_bins, pair, pool_args, pool_output_size, pool_window_end

__all__ = [
    "maxpool2d_forward_naive",
    "maxpool2d_backward_naive",
    "maxpool2d_forward",
    "maxpool2d_backward",
    "avgpool2d_forward_naive",
    "avgpool2d_backward_naive",
    "avgpool2d_forward",
    "avgpool2d_backward",
    "adaptive_avgpool2d_forward_naive",
    "adaptive_avgpool2d_backward_naive",
    "adaptive_avgpool2d_forward",
    "adaptive_avgpool2d_backward",
]


class PoolGeometry:
    """Checked hyperparameters and sizes of one pooling call."""

    def __init__(self, x_shape, kernel_size, stride, padding, dilation, ceil_mode, owner):
        self.K, self.S, self.P, self.D = pool_args(owner, kernel_size, stride, padding, dilation)
        if len(x_shape) != 4:
            raise ValueError(f"{owner}: expected a 4-D input (N, C, H, W), got shape {tuple(x_shape)}")
        H, W = x_shape[2:]
        self.Ho = pool_output_size(H, self.K[0], self.S[0], self.P[0], self.D[0], ceil_mode)
        self.Wo = pool_output_size(W, self.K[1], self.S[1], self.P[1], self.D[1], ceil_mode)
        if self.Ho < 1 or self.Wo < 1:
            raise ValueError(
                f"{owner}: input spatial size {(H, W)} is too small for kernel_size={self.K}, "
                f"stride={self.S}, padding={self.P}, dilation={self.D}: output would be "
                f"{(self.Ho, self.Wo)}; input shape {tuple(x_shape)}"
            )
        self.x_shape = tuple(x_shape)
        # padded buffer big enough for every window, also the ceil-mode last one
        self.Hb = max(H + 2 * self.P[0], pool_window_end(self.Ho, self.S[0], self.K[0], self.D[0]))
        self.Wb = max(W + 2 * self.P[1], pool_window_end(self.Wo, self.S[1], self.K[1], self.D[1]))

    def buffer(self, x, fill):
        """``x`` placed at offset ``P`` in a new (N, C, Hb, Wb) buffer filled with ``fill``."""
        N, C, H, W = x.shape
        xb = np.full((N, C, self.Hb, self.Wb), fill, dtype=x.dtype)
        xb[:, :, self.P[0]:self.P[0] + H, self.P[1]:self.P[1] + W] = x
        return xb

    def crop(self, xb):
        """Inverse of :meth:`buffer`: the (N, C, H, W) part of a buffer, as a new array."""
        H, W = self.x_shape[2:]
        return xb[:, :, self.P[0]:self.P[0] + H, self.P[1]:self.P[1] + W].copy()

    def tap(self, kh, kw):
        """Slices of the buffer that tap ``(kh, kw)`` of every window reads: (Ho, Wo) cells."""
        (S, T), (D, E) = self.S, self.D
        return (slice(kh * D, kh * D + (self.Ho - 1) * S + 1, S),
                slice(kw * E, kw * E + (self.Wo - 1) * T + 1, T))

    def window(self, i, j):
        """Buffer slices of window ``(i, j)``: (HH, WW) taps."""
        (S, T), (D, E), (HH, WW) = self.S, self.D, self.K
        return (slice(i * S, i * S + D * (HH - 1) + 1, D),
                slice(j * T, j * T + E * (WW - 1) + 1, E))

    def inside(self):
        """Boolean (Ho, Wo, HH, WW): is tap ``(kh, kw)`` of window ``(i, j)`` inside the input?"""
        H, W = self.x_shape[2:]
        (S, T), (D, E), (P, Q), (HH, WW) = self.S, self.D, self.P, self.K
        rows = np.arange(self.Ho)[:, None] * S + np.arange(HH)[None, :] * D - P  # (Ho, HH)
        cols = np.arange(self.Wo)[:, None] * T + np.arange(WW)[None, :] * E - Q  # (Wo, WW)
        rin = (rows >= 0) & (rows < H)
        cin = (cols >= 0) & (cols < W)
        return rin[:, None, :, None] & cin[None, :, None, :]

    def input_index(self, tap):
        """Flat input index ``row * W + col`` of tap number ``tap`` (an int array ending in
        (Ho, Wo), ``kh*WW + kw``), int64::

            (i*S + kh*D - P) * W + (j*T + kw*E - Q) = start[i, j] + offset[kh*WW + kw]
        """
        W = self.x_shape[3]
        (S, T), (D, E), (P, Q), (HH, WW) = self.S, self.D, self.P, self.K
        start = (np.arange(self.Ho)[:, None] * S - P) * W + (np.arange(self.Wo)[None, :] * T - Q)
        offset = (np.arange(HH)[:, None] * D * W + np.arange(WW)[None, :] * E).ravel()
        return offset[tap] + start

    def switches(self, tap):
        """The recorded positions of :func:`maxpool2d_forward`: :meth:`input_index` of each
        window's tap, -1 where the window misses the input."""
        return np.where(self.inside().any(axis=(2, 3)), self.input_index(tap), -1)


# ---------------------------------------------------------------- max pooling

def maxpool2d_forward_naive(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Loop version of the max-pooling rule in the module docstring.

    Returns
    -------
    out : (N, C, Ho, Wo)
    cache : (indices, geometry, x, out); ``indices`` (N, C, Ho, Wo) int64 holds the flat
        position ``row * W + col`` in the input of each window's maximum
        (PyTorch's ``return_indices``); ``x`` and ``out`` let the backward find ties.
    """
    g = PoolGeometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode, "maxpool2d")
    N, C, H, W = x.shape
    (S, T), (D, E), (P, Q), (HH, WW) = g.S, g.D, g.P, g.K
    out = np.empty((N, C, g.Ho, g.Wo), dtype=x.dtype)
    indices = np.empty((N, C, g.Ho, g.Wo), dtype=np.int64)
    for n in range(N):
        for c in range(C):
            for i in range(g.Ho):
                for j in range(g.Wo):
                    best, arg = -np.inf, None
                    for kh in range(HH):
                        for kw in range(WW):
                            r, s = i * S + kh * D - P, j * T + kw * E - Q
                            if not (0 <= r < H and 0 <= s < W):
                                continue  # padding: never chosen
                            v = x[n, c, r, s]
                            if arg is None:
                                arg = r * W + s
                            if v > best or np.isnan(v):
                                best, arg = v, r * W + s
                    out[n, c, i, j] = best
                    indices[n, c, i, j] = -1 if arg is None else arg  # -1: the window misses the input
    return out, (indices, g, x, out)


TIES = ("first", "last", "split")


def _check_ties(ties):
    if ties not in TIES:
        raise ValueError(f"unknown pool_ties {ties!r}; expected one of {', '.join(TIES)}")


def maxpool2d_backward_naive(dout, cache, ties="first"):
    """``dx[n, c, arg] += dout[n, c, i, j]`` for every window. Returns dx (N, C, H, W).

    With ``ties="last"`` ``arg`` is the last maximum of the window; with ``"split"``
    each of the ``k`` tied maxima receives ``dout[n, c, i, j] / k``.
    """
    _check_ties(ties)
    indices, g, x, out = cache
    N, C, H, W = g.x_shape
    (S, T), (D, E), (P, Q), (HH, WW) = g.S, g.D, g.P, g.K
    dx = np.zeros((N, C, H * W), dtype=dout.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(g.Ho):
                for j in range(g.Wo):
                    tied = [r * W + s for kh in range(HH) for kw in range(WW)
                            for r, s in [(i * S + kh * D - P, j * T + kw * E - Q)]
                            if 0 <= r < H and 0 <= s < W and x[n, c, r, s] == out[n, c, i, j]]
                    if ties == "first" or not tied:  # not tied: NaN maximum, or a window missing the input
                        if indices[n, c, i, j] >= 0:
                            dx[n, c, indices[n, c, i, j]] += dout[n, c, i, j]
                    elif ties == "last":
                        dx[n, c, tied[-1]] += dout[n, c, i, j]
                    else:  # split
                        for k in tied:
                            dx[n, c, k] += dout[n, c, i, j] / len(tied)
    return dx.reshape(N, C, H, W)


def maxpool2d_forward(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Vectorized max pooling: the naive rule run once per kernel tap over all windows.

    ``best`` and ``tap`` (N, C, Ho, Wo) are updated tap by tap in row-major order,
    exactly the naive loop with the window loops vectorized. Same contract as
    :func:`maxpool2d_forward_naive`.
    """
    g = PoolGeometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode, "maxpool2d")
    best, tap = max_taps(g.buffer(x, -np.inf), g)
    return best, (g.switches(tap), g, x, best)  # -1: the window misses the input


def max_taps(xb, g, tap_dtype=np.int32):
    """The tap loop of :func:`maxpool2d_forward` on ``xb``, the input placed as in
    :meth:`PoolGeometry.buffer` (-inf around it). Returns ``best`` (N, C, Ho, Wo), each window's
    maximum, and ``tap`` (N, C, Ho, Wo), its tap number ``kh*WW + kw``."""
    HH, WW = g.K
    best = np.full(xb.shape[:2] + (g.Ho, g.Wo), -np.inf, dtype=xb.dtype)
    tap = np.empty(best.shape, dtype=tap_dtype)
    tap[...] = np.argmax(g.inside().reshape(g.Ho, g.Wo, HH * WW), axis=-1)  # the first tap inside the input
    for kh in range(HH):
        for kw in range(WW):
            v = xb[(slice(None), slice(None)) + g.tap(kh, kw)]
            take = (v > best) | np.isnan(v)
            np.copyto(best, v, where=take)
            np.copyto(tap, kh * WW + kw, where=take)
    return best, tap


def maxpool2d_backward(dout, cache, ties="first"):
    """Vectorized switch routing: ``dx[n, c, switch] += dout[n, c, i, j]`` for every window.

    With ``ties="first"`` (the default, PyTorch's) the switch is the position the forward
    pass recorded, and the routing is one scatter (:func:`_scatter`; windows that share a
    switch, as overlapping windows do, add up). The other tie rules first decide, in a step
    of their own (:func:`_tie_shares`), which tied maxima get which share of the signal,
    then scatter the same way.
    """
    _check_ties(ties)
    indices, g, x, out = cache
    if ties == "first":
        return _scatter(dout, indices, g.x_shape)
    return _scatter(*_tie_shares(dout, cache, ties), g.x_shape)


def _scatter(shares, indices, x_shape):
    """``dx[n, c, indices[n, c, ...]] += shares[n, c, ...]`` with ``dx`` (N, C, H, W) zero elsewhere;
    an index of -1 (a window that missed the input) sends nothing."""
    N, C, H, W = x_shape
    plane = np.arange(N * C).reshape((N, C) + (1,) * (indices.ndim - 2)) * (H * W)  # where each (n, c) starts
    keep = indices >= 0
    dx = np.zeros(N * C * H * W, dtype=shares.dtype)
    np.add.at(dx, (plane + indices)[keep], shares[keep])
    return dx.reshape(N, C, H, W)


def _tie_shares(dout, cache, ties):
    """``(shares, indices)``, (N, C, Ho, Wo, taps): which input positions get which part of each
    window's signal under ``ties``. A window's tied maxima are its taps inside the input equal to
    its output; "last" gives the signal to the last of them, "split" ``dout / k`` to each of the
    ``k``. A window with none (NaN maximum, or outside the input) keeps its recorded switch."""
    indices, g, x, out = cache
    taps = [(kh, kw) for kh in range(g.K[0]) for kw in range(g.K[1])]
    xb, inside = g.buffer(x, -np.inf), g.inside()
    tied = np.stack([(xb[(slice(None), slice(None)) + g.tap(kh, kw)] == out) & inside[:, :, kh, kw]
                     for kh, kw in taps], axis=-1)
    if ties == "last":
        last = len(taps) - 1 - np.argmax(tied[..., ::-1], axis=-1)
        tied &= np.arange(len(taps)) == last[..., None]
    count = tied.sum(axis=-1)
    shares = np.where(tied, (dout / np.maximum(count, 1).astype(dout.dtype))[..., None], np.zeros((), dout.dtype))
    where = np.stack([g.input_index(np.full((g.Ho, g.Wo), t)) for t in range(len(taps))], axis=-1)
    targets = np.where(tied, where, -1)
    untied = count == 0
    shares[..., 0] = np.where(untied, dout, shares[..., 0])
    targets[..., 0] = np.where(untied, indices, targets[..., 0])
    return shares, targets


# ------------------------------------------------------------ average pooling

def _avg_divisor(g, count_include_pad):
    """(Ho, Wo) divisors of average pooling, PyTorch's rule (module docstring)."""
    H, W = g.x_shape[2:]

    def axis(n_out, S, P, K, size):
        start = np.arange(n_out) * S - P
        end = np.minimum(start + K, size + P)
        full = end - start
        inside = np.minimum(end, size) - np.maximum(start, 0)
        return full, inside

    fh, ih = axis(g.Ho, g.S[0], g.P[0], g.K[0], H)
    fw, iw = axis(g.Wo, g.S[1], g.P[1], g.K[1], W)
    if count_include_pad:
        return np.outer(fh, fw)
    return np.outer(ih, iw)


def _avg_geometry(x_shape, kernel_size, stride, padding, ceil_mode):
    return PoolGeometry(x_shape, kernel_size, stride, padding, 1, ceil_mode, "avgpool2d")


def avgpool2d_forward_naive(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Loop version of average pooling. Returns ``out`` (N, C, Ho, Wo) and a cache."""
    g = _avg_geometry(x.shape, kernel_size, stride, padding, ceil_mode)
    N, C, H, W = x.shape
    (S, T), (P, Q), (HH, WW) = g.S, g.P, g.K
    out = np.empty((N, C, g.Ho, g.Wo), dtype=x.dtype)
    divisor = np.empty((g.Ho, g.Wo), dtype=np.int64)
    for i in range(g.Ho):
        for j in range(g.Wo):
            r0, s0 = i * S - P, j * T - Q  # window start, input coordinates
            r1, s1 = min(r0 + HH, H + P), min(s0 + WW, W + Q)  # clipped to the padded input
            area_padded = (r1 - r0) * (s1 - s0)
            r0, s0, r1, s1 = max(r0, 0), max(s0, 0), min(r1, H), min(s1, W)  # clipped to the input
            divisor[i, j] = area_padded if count_include_pad else (r1 - r0) * (s1 - s0)
            for n in range(N):
                for c in range(C):
                    out[n, c, i, j] = x[n, c, r0:r1, s0:s1].sum() / divisor[i, j]
    return out, (divisor, g)


def avgpool2d_backward_naive(dout, cache):
    """Each window spreads ``dout / divisor`` over its taps inside the input."""
    divisor, g = cache
    N, C, H, W = g.x_shape
    (S, T), (P, Q), (HH, WW) = g.S, g.P, g.K
    dx = np.zeros(g.x_shape, dtype=dout.dtype)
    for i in range(g.Ho):
        for j in range(g.Wo):
            r0, s0 = max(i * S - P, 0), max(j * T - Q, 0)
            r1, s1 = min(i * S - P + HH, H), min(j * T - Q + WW, W)
            for n in range(N):
                for c in range(C):
                    dx[n, c, r0:r1, s0:s1] += dout[n, c, i, j] / divisor[i, j]
    return dx


def avgpool2d_forward(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Vectorized average pooling: sum of one strided slice per tap of a zero-padded buffer."""
    g = _avg_geometry(x.shape, kernel_size, stride, padding, ceil_mode)
    N, C = x.shape[:2]
    xb = g.buffer(x, 0)
    total = np.zeros((N, C, g.Ho, g.Wo), dtype=x.dtype)
    for kh in range(g.K[0]):
        for kw in range(g.K[1]):
            total += xb[(slice(None), slice(None)) + g.tap(kh, kw)]
    divisor = _avg_divisor(g, count_include_pad)
    return total / divisor.astype(x.dtype), (divisor, g)


def avgpool2d_backward(dout, cache):
    """Vectorized: ``dout / divisor`` added back through every tap, then the padding cropped."""
    divisor, g = cache
    N, C = g.x_shape[:2]
    share = dout / divisor.astype(dout.dtype)
    dxb = np.zeros((N, C, g.Hb, g.Wb), dtype=dout.dtype)
    for kh in range(g.K[0]):
        for kw in range(g.K[1]):
            dxb[(slice(None), slice(None)) + g.tap(kh, kw)] += share
    return g.crop(dxb)


# --------------------------------------------------- adaptive average pooling

def _adaptive_geometry(x_shape, output_size):
    if len(x_shape) != 4:
        raise ValueError(f"adaptive_avgpool2d: expected a 4-D input (N, C, H, W), got shape {tuple(x_shape)}")
    H, W = x_shape[2:]
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        # None keeps the input size on that axis, as in PyTorch
        output_size = (H if output_size[0] is None else output_size[0],
                       W if output_size[1] is None else output_size[1])
    Ho, Wo = pair(output_size, "output_size", "adaptive_avgpool2d", minimum=1)
    if H < 1 or W < 1:
        raise ValueError(f"adaptive_avgpool2d: empty spatial input, shape {tuple(x_shape)}")
    return adaptive_bins(H, Ho), adaptive_bins(W, Wo), tuple(x_shape)


def adaptive_avgpool2d_forward_naive(x, output_size):
    """``out[n, c, i, j]`` = mean of ``x[n, c, rows_i, cols_j]`` with the bins of
    :func:`minigbp.shapes.adaptive_bins`. Returns ``out`` (N, C, Ho, Wo) and a cache."""
    rows, cols, shape = _adaptive_geometry(x.shape, output_size)
    N, C = x.shape[:2]
    out = np.empty((N, C, len(rows), len(cols)), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i, (r0, r1) in enumerate(rows):
                for j, (s0, s1) in enumerate(cols):
                    out[n, c, i, j] = x[n, c, r0:r1, s0:s1].sum() / ((r1 - r0) * (s1 - s0))
    return out, (rows, cols, shape)


def adaptive_avgpool2d_backward_naive(dout, cache):
    """Each bin spreads ``dout / area`` over its cells (overlapping bins add up)."""
    rows, cols, shape = cache
    N, C = shape[:2]
    dx = np.zeros(shape, dtype=dout.dtype)
    for n in range(N):
        for c in range(C):
            for i, (r0, r1) in enumerate(rows):
                for j, (s0, s1) in enumerate(cols):
                    dx[n, c, r0:r1, s0:s1] += dout[n, c, i, j] / ((r1 - r0) * (s1 - s0))
    return dx


def adaptive_avgpool2d_forward(x, output_size):
    """Vectorized over (N, C): one mean per output bin."""
    rows, cols, shape = _adaptive_geometry(x.shape, output_size)
    N, C = x.shape[:2]
    out = np.empty((N, C, len(rows), len(cols)), dtype=x.dtype)
    for i, (r0, r1) in enumerate(rows):
        for j, (s0, s1) in enumerate(cols):
            out[:, :, i, j] = x[:, :, r0:r1, s0:s1].sum(axis=(2, 3)) / x.dtype.type((r1 - r0) * (s1 - s0))
    return out, (rows, cols, shape)


def adaptive_avgpool2d_backward(dout, cache):
    """Vectorized over (N, C): one broadcast add per output bin."""
    rows, cols, shape = cache
    dx = np.zeros(shape, dtype=dout.dtype)
    for i, (r0, r1) in enumerate(rows):
        for j, (s0, s1) in enumerate(cols):
            dx[:, :, r0:r1, s0:s1] += (dout[:, :, i, j] / dout.dtype.type((r1 - r0) * (s1 - s0)))[:, :, None, None]
    return dx
