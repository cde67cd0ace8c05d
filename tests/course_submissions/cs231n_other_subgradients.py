"""Correct under any subgradient, not PyTorch's choice: the last tied maximum, the signal
split among tied maxima (as CS231n's own reshape-based fast layer does), a ReLU that passes
the signal at x == 0, and a forward that returns [out, cache] as a list."""

import numpy as np

from cs231n_correct import (affine_backward, affine_forward, conv_backward_naive,  # noqa: F401
                            conv_forward_naive, max_pool_forward_naive)


def relu_forward(x):
    return [np.maximum(0, x), x]


def relu_backward(dout, cache):
    return dout * (cache >= 0)


def max_pool_backward_naive(dout, cache):
    """The last maximum of each window wins (>= while scanning)."""
    x, pool_param = cache
    PH, PW, S = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    dx = np.zeros_like(x)
    N, C, H_out, W_out = dout.shape
    for n in range(N):
        for c in range(C):
            for i in range(H_out):
                for j in range(W_out):
                    best, at = -np.inf, None
                    for r in range(PH):
                        for s in range(PW):
                            v = x[n, c, i * S + r, j * S + s]
                            if v >= best:
                                best, at = v, (i * S + r, j * S + s)
                    dx[n, c, at[0], at[1]] += dout[n, c, i, j]
    return dx


def max_pool_forward_fast(x, pool_param):
    return max_pool_forward_naive(x, pool_param)


def max_pool_backward_fast(dout, cache):
    """Each window's signal split evenly among its tied maxima."""
    x, pool_param = cache
    PH, PW, S = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    dx = np.zeros_like(x)
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            window = x[:, :, i * S:i * S + PH, j * S:j * S + PW]
            mask = window == window.max(axis=(2, 3), keepdims=True)
            dx[:, :, i * S:i * S + PH, j * S:j * S + PW] += mask * (dout[:, :, i:i + 1, j:j + 1]
                                                                    / mask.sum(axis=(2, 3), keepdims=True))
    return dx
