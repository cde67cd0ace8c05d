"""Padding by a constant, naive and vectorized.

``pads = (top, bottom, left, right)``: the input (N, C, H, W) is placed inside a frame of
``value`` (0 for zero padding; -inf before a max pooling, which then never picks it)::

    out[n, c, top + i, left + j] = x[n, c, i, j]         (N, C, top + H + bottom, left + W + right)

and every other position of ``out`` holds ``value``. Backward: each input position
receives the signal of the output position it was copied to, so the backward pass crops
the frame away, the same in every mode::

    dx[n, c, i, j] = dout[n, c, top + i, left + j]

Most padding lives inside the convolution and pooling ops (``padding=``, symmetric). A
separate padding layer is needed where the padding is not symmetric: Keras's
``ZeroPadding2D`` and its ``padding="same"`` with an even kernel or a stride
(:func:`minigbp.shapes.same_padding`).
"""

import numpy as np

__all__ = ["pad2d_forward_naive", "pad2d_backward_naive", "pad2d_forward", "pad2d_backward"]


def _check_pads(pads, owner="pad2d"):
    if len(pads) != 4 or any(int(p) != p or p < 0 for p in pads):
        raise ValueError(f"{owner}: pads must be four ints >= 0 (top, bottom, left, right), got {pads!r}")
    return tuple(int(p) for p in pads)


def pad2d_forward_naive(x, pads, value=0.0):
    """The frame, then every input value copied to its place, one at a time."""
    top, bottom, left, right = _check_pads(pads)
    N, C, H, W = x.shape
    out = np.full((N, C, top + H + bottom, left + W + right), value, dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    out[n, c, top + i, left + j] = x[n, c, i, j]
    return out, (x.shape, (top, bottom, left, right))


def pad2d_backward_naive(dout, cache):
    """``dx[n, c, i, j] = dout[n, c, top + i, left + j]``, one position at a time."""
    (N, C, H, W), (top, _, left, _) = cache
    dx = np.zeros((N, C, H, W), dtype=dout.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    dx[n, c, i, j] = dout[n, c, top + i, left + j]
    return dx


def pad2d_forward(x, pads, value=0.0):
    """(N, C, H, W) -> (N, C, top + H + bottom, left + W + right); cache ``(x.shape, pads)``."""
    top, bottom, left, right = _check_pads(pads)
    out = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)
    return out, (x.shape, (top, bottom, left, right))


def pad2d_backward(dout, cache):
    """The signal at the input: ``dout`` with the frame cropped away (a copy)."""
    (_, _, H, W), (top, _, left, _) = cache
    return dout[:, :, top:top + H, left:left + W].copy()
