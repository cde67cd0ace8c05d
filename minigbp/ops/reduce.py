"""The maximum over each channel's positions as a *reduction*, naive and vectorized.

(N, C, H, W) -> (N, C, 1, 1)::

    out[n, c] = max over (i, j) of x[n, c, i, j]

Backward: the subgradient PyTorch's ``amax`` and TensorFlow's ``reduce_max`` (Keras's
``GlobalMaxPooling2D``) use, which shares the signal equally among tied maxima::

    dx[n, c, i, j] = dout[n, c] * [x[n, c, i, j] == out[n, c]] / #{(i', j'): x[n, c, i', j'] == out[n, c]}

Without ties this is max pooling over the whole map; with ties (a channel a ReLU left at
zero everywhere) it is not: max pooling sends the signal to the first maximum only (the
``pool_ties`` convention is about pooling windows, not reductions). The same in every mode.
"""

import numpy as np

__all__ = ["global_max_forward_naive", "global_max_backward_naive", "global_max_forward", "global_max_backward"]


def global_max_forward_naive(x):
    N, C, H, W = x.shape
    out = np.empty((N, C, 1, 1), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            best = -np.inf
            for i in range(H):
                for j in range(W):
                    best = max(best, x[n, c, i, j])
            out[n, c, 0, 0] = best
    return out, (x, out)


def global_max_backward_naive(dout, cache):
    x, out = cache
    N, C, H, W = x.shape
    dx = np.zeros_like(x, dtype=dout.dtype)
    for n in range(N):
        for c in range(C):
            tied = [(i, j) for i in range(H) for j in range(W) if x[n, c, i, j] == out[n, c, 0, 0]]
            for i, j in tied:
                dx[n, c, i, j] = dout[n, c, 0, 0] / len(tied)
    return dx


def global_max_forward(x):
    """(N, C, H, W) -> (N, C, 1, 1); cache ``(x, out)``."""
    out = x.max(axis=(2, 3), keepdims=True)
    return out, (x, out)


def global_max_backward(dout, cache):
    """The signal at the input: ``dout`` shared among each channel's tied maxima."""
    x, out = cache
    tied = (x == out).astype(dout.dtype)
    return tied * (dout / tied.sum(axis=(2, 3), keepdims=True))
