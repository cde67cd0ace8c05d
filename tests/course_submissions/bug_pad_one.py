"""conv forward pads by 1 whatever conv_param says."""
import numpy as np

from cs231n_correct import *  # noqa: F401,F403


def conv_forward_naive(x, w, b, conv_param):
    S = conv_param["stride"]
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out = 1 + (H + 2 * conv_param["pad"] - HH) // S
    W_out = 1 + (W + 2 * conv_param["pad"] - WW) // S
    x_pad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((N, F, H_out, W_out))
    for n in range(N):
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    out[n, f, i, j] = np.sum(x_pad[n, :, i * S:i * S + HH, j * S:j * S + WW] * w[f]) + b[f]
    return out, (x, w, b, conv_param)
