"""max-pool backward sends the whole signal to every tied maximum (the x == max mask)."""
import numpy as np

from cs231n_correct import *  # noqa: F401,F403


def max_pool_backward_naive(dout, cache):
    x, pool_param = cache
    PH, PW, S = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    dx = np.zeros_like(x)
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            window = x[:, :, i * S:i * S + PH, j * S:j * S + PW]
            mask = window == np.max(window, axis=(2, 3), keepdims=True)
            dx[:, :, i * S:i * S + PH, j * S:j * S + PW] += mask * dout[:, :, i:i + 1, j:j + 1]
    return dx
