"""2-D convolution (cross-correlation, as in PyTorch), naive and vectorized.

Shapes: input ``x`` (N, C, H, W); weights ``w`` (F, C/G, HH, WW); bias ``b`` (F,);
output (N, F, Ho, Wo) with ``Ho``, ``Wo`` from :func:`minigbp.shapes.conv_output_size`.
``G`` groups split the channels: output channel ``f`` belongs to group
``g = f // (F/G)`` and reads only input channels ``g*C/G .. (g+1)*C/G - 1``.

Forward, with ``xp`` the input zero-padded by ``P`` on every side and
``c0 = g * C/G``::

    out[n, f, i, j] = b[f] + sum_{c, kh, kw} w[f, c, kh, kw] * xp[n, c0 + c, i*S + kh*D, j*S + kw*D]

Backward (the same sum read the other way): every product above sends
``dout[n, f, i, j]`` to both of its factors::

    dxp[n, c0 + c, i*S + kh*D, j*S + kw*D] += w[f, c, kh, kw] * dout[n, f, i, j]
    dw[f, c, kh, kw]                       += xp[n, c0 + c, i*S + kh*D, j*S + kw*D] * dout[n, f, i, j]
    db[f]                                  += dout[n, f, i, j]

and ``dx`` is ``dxp`` without its padding. Convolution is linear in ``x``, so
its backward is the same in every mode.
"""

import numpy as np

from ..shapes import conv_output_size, pair

__all__ = [
    "conv2d_forward_naive",
    "conv2d_backward_naive",
    "conv2d_forward",
    "conv2d_backward",
    "conv2d_backward_data",
    "conv2d_backward_weights",
]


class ConvGeometry:
    """Checked hyperparameters and sizes of one convolution call."""

    def __init__(self, x_shape, w_shape, b_shape, stride, padding, dilation, groups, owner="conv2d"):
        self.S = pair(stride, "stride", owner, minimum=1)
        self.P = pair(padding, "padding", owner, minimum=0)
        self.D = pair(dilation, "dilation", owner, minimum=1)
        if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
            raise ValueError(f"{owner}: groups must be a positive int, got {groups!r}")
        self.G = int(groups)
        if len(x_shape) != 4:
            raise ValueError(f"{owner}: expected a 4-D input (N, C, H, W), got shape {tuple(x_shape)}")
        if len(w_shape) != 4:
            raise ValueError(f"{owner}: expected 4-D weights (F, C/groups, HH, WW), got shape {tuple(w_shape)}")
        N, C, H, W = x_shape
        F, Cg, HH, WW = w_shape
        if min(F, Cg, HH, WW) < 1:
            raise ValueError(f"{owner}: weights {tuple(w_shape)} are empty: every dimension must be >= 1")
        if F % self.G:
            raise ValueError(f"{owner}: out channels {F} not divisible by groups={self.G}")
        if C != Cg * self.G:
            raise ValueError(
                f"{owner}: input has {C} channels but weights {tuple(w_shape)} with groups={self.G} "
                f"expect {Cg * self.G} (input shape {tuple(x_shape)})"
            )
        if b_shape is not None and tuple(b_shape) != (F,):
            raise ValueError(f"{owner}: bias must have shape ({F},), got {tuple(b_shape)}")
        self.Ho = conv_output_size(H, HH, self.S[0], self.P[0], self.D[0])
        self.Wo = conv_output_size(W, WW, self.S[1], self.P[1], self.D[1])
        if self.Ho < 1 or self.Wo < 1:
            eff = (self.D[0] * (HH - 1) + 1, self.D[1] * (WW - 1) + 1)
            raise ValueError(
                f"{owner}: input spatial size {(H, W)} with padding {self.P} is too small for a "
                f"kernel of effective size {eff}; input shape {tuple(x_shape)}"
            )
        self.x_shape, self.w_shape = tuple(x_shape), tuple(w_shape)


def _pad(x, P, fill=0):
    """``x`` (N, C, H, W) in a new buffer with ``P = (ph, pw)`` cells of ``fill`` around."""
    N, C, H, W = x.shape
    xp = np.full((N, C, H + 2 * P[0], W + 2 * P[1]), fill, dtype=x.dtype)
    xp[:, :, P[0]:P[0] + H, P[1]:P[1] + W] = x
    return xp


def conv2d_forward_naive(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """Loop version of the forward equation in the module docstring.

    Parameters
    ----------
    x : (N, C, H, W);  w : (F, C/groups, HH, WW);  b : (F,) or None
    stride, padding, dilation : int or (int, int)
    groups : int

    Returns
    -------
    out : (N, F, Ho, Wo)
    cache : (x, w, b, geometry) for :func:`conv2d_backward_naive`
    """
    g = ConvGeometry(x.shape, w.shape, None if b is None else b.shape, stride, padding, dilation, groups)
    (S, T), (D, E) = g.S, g.D
    N, F, HH, WW = x.shape[0], w.shape[0], w.shape[2], w.shape[3]
    Cg, Fg = w.shape[1], F // g.G
    xp = _pad(x, g.P)
    out = np.zeros((N, F, g.Ho, g.Wo), dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            c0 = (f // Fg) * Cg
            for i in range(g.Ho):
                for j in range(g.Wo):
                    window = xp[n, c0:c0 + Cg, i * S:i * S + D * (HH - 1) + 1:D, j * T:j * T + E * (WW - 1) + 1:E]
                    out[n, f, i, j] = np.sum(w[f] * window) + (0 if b is None else b[f])
    return out, (x, w, b, g)


def conv2d_backward_naive(dout, cache):
    """Loop version of the backward equations in the module docstring.

    Returns ``dx`` (N, C, H, W), ``dw`` (F, C/groups, HH, WW), ``db`` (F,) or None.
    """
    x, w, b, g = cache
    (S, T), (D, E) = g.S, g.D
    N, F, HH, WW = x.shape[0], w.shape[0], w.shape[2], w.shape[3]
    Cg, Fg = w.shape[1], F // g.G
    xp = _pad(x, g.P)
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    db = None if b is None else np.zeros_like(b)
    for n in range(N):
        for f in range(F):
            c0 = (f // Fg) * Cg
            for i in range(g.Ho):
                for j in range(g.Wo):
                    rows = slice(i * S, i * S + D * (HH - 1) + 1, D)
                    cols = slice(j * T, j * T + E * (WW - 1) + 1, E)
                    r = dout[n, f, i, j]
                    dxp[n, c0:c0 + Cg, rows, cols] += w[f] * r
                    dw[f] += xp[n, c0:c0 + Cg, rows, cols] * r
                    if db is not None:
                        db[f] += r
    H, W = x.shape[2:]
    dx = dxp[:, :, g.P[0]:g.P[0] + H, g.P[1]:g.P[1] + W].copy()
    return dx, dw, db


def _im2col(x, g, HH, WW):
    """Columns of every receptive field: (C*HH*WW, N*Ho*Wo), rows ordered (c, kh, kw).

    ``cols[(c, kh, kw), (n, i, j)] = xp[n, c, i*S + kh*D, j*T + kw*E]``: a strided
    view of the padded input, copied once into matmul order.
    """
    N, C = x.shape[:2]
    (S, T), (D, E) = g.S, g.D
    xp = _pad(x, g.P) if g.P != (0, 0) else x
    sN, sC, sH, sW = xp.strides
    view = np.lib.stride_tricks.as_strided(
        xp,
        shape=(C, HH, WW, N, g.Ho, g.Wo),
        strides=(sC, sH * D, sW * E, sN, sH * S, sW * T),
        writeable=False,
    )
    return np.ascontiguousarray(view).reshape(C * HH * WW, N * g.Ho * g.Wo)


def _pointwise(g, HH, WW):
    """A 1x1 convolution with stride 1, no padding and one group: a matrix product over channels
    at every pixel, with no receptive fields to gather (ResNet's bottlenecks are mostly these)."""
    return (HH, WW) == (1, 1) and g.S == (1, 1) and g.P == (0, 0) and g.G == 1


def conv2d_forward(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """Vectorized forward: im2col + one matmul per group. Same contract as the naive one.

    With ``cols`` from :func:`_im2col`, the equation becomes a matrix product per group::

        out[f, (n, i, j)] = W[f, (c, kh, kw)] @ cols[(c, kh, kw), (n, i, j)] + b[f]
    """
    g = ConvGeometry(x.shape, w.shape, None if b is None else b.shape, stride, padding, dilation, groups)
    N, F, Cg, HH, WW = x.shape[0], w.shape[0], w.shape[1], w.shape[2], w.shape[3]
    if _pointwise(g, HH, WW):  # each pixel's channels times W: out[n] = W @ x[n], (F, C) @ (C, H*W)
        out = np.matmul(w.reshape(F, Cg), x.reshape(N, Cg, -1))
        if b is not None:
            out += b[:, None]
        return out.reshape(N, F, g.Ho, g.Wo), (x, w, b, g)
    cols = _im2col(x, g, HH, WW).reshape(g.G, Cg * HH * WW, -1)
    out = np.matmul(w.reshape(g.G, F // g.G, Cg * HH * WW), cols).reshape(F, N * g.Ho * g.Wo)
    if b is not None:
        out += b[:, None]
    out = out.reshape(F, N, g.Ho, g.Wo).transpose(1, 0, 2, 3)  # (N, F, Ho, Wo)
    return np.ascontiguousarray(out), (x, w, b, g)


def conv2d_backward_data(dout, cache):
    """Signal at the input, ``dx`` (N, C, H, W): the transposed convolution.

    ``dcols = W^T @ dout`` gives, for every kernel tap, the signal each receptive
    field sends back; col2im then adds tap ``(kh, kw)`` of all fields into the
    padded input at once, one strided slice per tap, so overlapping fields add up.
    """
    x, w, b, g = cache
    N, C, H, W = x.shape
    F, Cg, HH, WW = w.shape
    (S, T), (D, E) = g.S, g.D
    if _pointwise(g, HH, WW):  # dx[n] = W^T @ dout[n], (C, F) @ (F, H*W)
        return np.matmul(w.reshape(F, C).T, dout.reshape(N, F, -1)).reshape(x.shape)
    dmat = dout.transpose(1, 0, 2, 3).reshape(g.G, F // g.G, N * g.Ho * g.Wo)
    wmat = w.reshape(g.G, F // g.G, Cg * HH * WW)
    dcols = np.matmul(wmat.transpose(0, 2, 1), dmat).reshape(C, HH, WW, N, g.Ho, g.Wo)
    # accumulate in (C, N, Hp, Wp) order, the order of dcols, so every add runs over
    # contiguous rows; one transposing copy at the end gives (N, C, H, W)
    dxp = np.zeros((C, N, H + 2 * g.P[0], W + 2 * g.P[1]), dtype=dout.dtype)
    for kh in range(HH):
        for kw in range(WW):
            rows = slice(kh * D, kh * D + (g.Ho - 1) * S + 1, S)
            cols = slice(kw * E, kw * E + (g.Wo - 1) * T + 1, T)
            dxp[:, :, rows, cols] += dcols[:, kh, kw]
    return np.ascontiguousarray(dxp[:, :, g.P[0]:g.P[0] + H, g.P[1]:g.P[1] + W].transpose(1, 0, 2, 3))


def conv2d_backward_weights(dout, cache):
    """Parameter gradients ``dw`` (F, C/G, HH, WW) and ``db`` (F,) or None.

    ``dw[f, (c, kh, kw)] = dout[f, (n, i, j)] @ cols[(c, kh, kw), (n, i, j)]^T`` per group,
    ``db[f] = sum_{n, i, j} dout[n, f, i, j]``.
    """
    x, w, b, g = cache
    N = x.shape[0]
    F, Cg, HH, WW = w.shape
    cols = _im2col(x, g, HH, WW).reshape(g.G, Cg * HH * WW, -1)
    dmat = dout.transpose(1, 0, 2, 3).reshape(g.G, F // g.G, N * g.Ho * g.Wo)
    dw = np.matmul(dmat, cols.transpose(0, 2, 1)).reshape(w.shape).astype(dout.dtype, copy=False)
    db = None if b is None else dout.sum(axis=(0, 2, 3))
    return dw, db


def conv2d_backward(dout, cache):
    """Vectorized backward: returns ``dx, dw, db`` like :func:`conv2d_backward_naive`."""
    dw, db = conv2d_backward_weights(dout, cache)
    return conv2d_backward_data(dout, cache), dw, db
