"""max-pool forward takes the window's size from the stride."""
import numpy as np

from cs231n_correct import *  # noqa: F401,F403


def max_pool_forward_naive(x, pool_param):
    N, C, H, W = x.shape
    PH, PW, S = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    H_out, W_out = 1 + (H - PH) // S, 1 + (W - PW) // S
    out = np.zeros((N, C, H_out, W_out))
    for i in range(H_out):
        for j in range(W_out):
            out[:, :, i, j] = np.max(x[:, :, i * S:i * S + S, j * S:j * S + S], axis=(2, 3))
    return out, (x, pool_param)
