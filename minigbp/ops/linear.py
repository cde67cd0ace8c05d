"""Fully connected layer, naive and vectorized.

Shapes: input ``x`` (N, I); weights ``w`` (O, I) (PyTorch's layout); bias ``b`` (O,);
output (N, O).

Forward::

    out[n, o] = b[o] + sum_i w[o, i] * x[n, i]          (out = x @ w.T + b)

Backward, the same sum read the other way::

    dx[n, i] = sum_o dout[n, o] * w[o, i]               (dx = dout @ w)
    dw[o, i] = sum_n dout[n, o] * x[n, i]               (dw = dout.T @ x)
    db[o]    = sum_n dout[n, o]

Linear in ``x``, so the same in every backward mode.
"""

import numpy as np

__all__ = ["linear_forward_naive", "linear_backward_naive", "linear_forward", "linear_backward",
           "linear_backward_data"]


def _check(x, w, b, owner="linear"):
    if w.ndim != 2:
        raise ValueError(f"{owner}: weights must be 2-D (out_features, in_features), got shape {w.shape}")
    if x.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(
            f"{owner}: expected input of shape (N, {w.shape[1]}) for weights {w.shape}, got {x.shape}"
        )
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(f"{owner}: bias must have shape ({w.shape[0]},), got {b.shape}")


def linear_forward_naive(x, w, b=None):
    """Loop version: ``out[n, o] = b[o] + sum_i w[o, i] x[n, i]``. Returns out (N, O), cache."""
    _check(x, w, b)
    N, (O, I) = x.shape[0], w.shape
    out = np.zeros((N, O), dtype=x.dtype)
    for n in range(N):
        for o in range(O):
            acc = 0 if b is None else b[o]
            for i in range(I):
                acc += w[o, i] * x[n, i]
            out[n, o] = acc
    return out, (x, w, b)


def linear_backward_naive(dout, cache):
    """Loop version of the three backward sums. Returns dx (N, I), dw (O, I), db (O,) or None."""
    x, w, b = cache
    N, (O, I) = x.shape[0], w.shape
    dx, dw = np.zeros_like(x, dtype=dout.dtype), np.zeros_like(w, dtype=dout.dtype)
    db = None if b is None else np.zeros(O, dtype=dout.dtype)
    for n in range(N):
        for o in range(O):
            for i in range(I):
                dx[n, i] += dout[n, o] * w[o, i]
                dw[o, i] += dout[n, o] * x[n, i]
            if db is not None:
                db[o] += dout[n, o]
    return dx, dw, db


def linear_forward(x, w, b=None):
    """Vectorized: ``out = x @ w.T + b``. Same contract as the naive version."""
    _check(x, w, b)
    out = x @ w.T
    if b is not None:
        out += b
    return out, (x, w, b)


def linear_backward_data(dout, cache):
    """``dx = dout @ w`` (N, I)."""
    x, w, b = cache
    return dout @ w


def linear_backward(dout, cache):
    """Vectorized: ``dx = dout @ w``, ``dw = dout.T @ x``, ``db = dout.sum(0)``."""
    x, w, b = cache
    return dout @ w, dout.T @ x, None if b is None else dout.sum(axis=0)
