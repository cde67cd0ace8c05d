"""max-pool backward assigns (=) instead of adding (+=): overlapping windows lose signal."""
import numpy as np

from cs231n_correct import *  # noqa: F401,F403


def max_pool_backward_naive(dout, cache):
    x, pool_param = cache
    PH, PW, S = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    dx = np.zeros_like(x)
    N, C, H_out, W_out = dout.shape
    for n in range(N):
        for c in range(C):
            for i in range(H_out):
                for j in range(W_out):
                    window = x[n, c, i * S:i * S + PH, j * S:j * S + PW]
                    mask = np.zeros_like(window)
                    mask[np.unravel_index(np.argmax(window), window.shape)] = 1
                    dx[n, c, i * S:i * S + PH, j * S:j * S + PW] = mask * dout[n, c, i, j]
    return dx
