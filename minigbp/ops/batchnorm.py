"""Batch normalization at inference time (running statistics), naive and vectorized.

Shapes: input ``x`` (N, C, H, W); per-channel vectors ``mean``, ``var`` (the running
statistics), ``gamma`` (weight), ``beta`` (bias), all (C,); output (N, C, H, W).

Forward, with the statistics fixed (``torch.nn.BatchNorm2d`` in eval mode)::

    out[n, c, i, j] = (x[n, c, i, j] - mean[c]) / sqrt(var[c] + eps) * gamma[c] + beta[c]

which is an affine map per channel, ``out = a[c] * x + s[c]`` with
``a[c] = gamma[c] / sqrt(var[c] + eps)`` and ``s[c] = beta[c] - mean[c] * a[c]``
(PyTorch's CPU kernel computes it in this form too). Backward::

    dx[n, c, i, j] = a[c] * dout[n, c, i, j]
    dgamma[c]      = sum_{n, i, j} dout[n, c, i, j] * (x[n, c, i, j] - mean[c]) / sqrt(var[c] + eps)
    dbeta[c]       = sum_{n, i, j} dout[n, c, i, j]

Affine in ``x``, so the same in every backward mode. Without affine parameters
(``affine=False``) ``gamma`` is 1 and ``beta`` is 0.
"""

import numpy as np

__all__ = ["batchnorm2d_forward_naive", "batchnorm2d_backward_naive", "batchnorm2d_forward",
           "batchnorm2d_backward", "batchnorm2d_backward_data"]


def _check(x, mean, var, gamma, beta, owner="batchnorm2d"):
    if x.ndim != 4:
        raise ValueError(f"{owner}: expected a 4-D input (N, C, H, W), got shape {x.shape}")
    C = x.shape[1]
    for name, v in (("running_mean", mean), ("running_var", var), ("weight", gamma), ("bias", beta)):
        if v is not None and v.shape != (C,):
            raise ValueError(f"{owner}: {name} must have shape ({C},) for an input with {C} channels, "
                             f"got {v.shape} (input shape {x.shape})")


def _scale_shift(mean, var, gamma, beta, eps, dtype):
    """The per-channel affine map ``(a, s)`` of the module docstring, in ``dtype``."""
    a = 1 / np.sqrt(var + dtype.type(eps))
    if gamma is not None:
        a = a * gamma
    s = -mean * a
    if beta is not None:
        s = s + beta
    return a.astype(dtype, copy=False), s.astype(dtype, copy=False)


def batchnorm2d_forward_naive(x, mean, var, gamma=None, beta=None, eps=1e-5):
    """Loop version of the forward equation, one element at a time.

    Parameters
    ----------
    x : (N, C, H, W);  mean, var : (C,) running statistics;  gamma, beta : (C,) or None
    eps : float, added to the variance

    Returns
    -------
    out : (N, C, H, W)
    cache : (x, mean, var, gamma, beta, eps)
    """
    _check(x, mean, var, gamma, beta)
    out = np.zeros_like(x)
    for n, c, i, j in np.ndindex(x.shape):
        xhat = (x[n, c, i, j] - mean[c]) / np.sqrt(var[c] + eps)
        out[n, c, i, j] = xhat * (1 if gamma is None else gamma[c]) + (0 if beta is None else beta[c])
    return out, (x, mean, var, gamma, beta, eps)


def batchnorm2d_backward_naive(dout, cache):
    """Loop version of the backward equations. Returns ``dx``, ``dgamma``, ``dbeta``
    (the last two None without affine parameters)."""
    x, mean, var, gamma, beta, eps = cache
    dx = np.zeros_like(dout)
    dgamma = None if gamma is None else np.zeros_like(gamma)
    dbeta = None if beta is None else np.zeros_like(beta)
    for n, c, i, j in np.ndindex(x.shape):
        r = dout[n, c, i, j]
        inv = 1 / np.sqrt(var[c] + eps)
        dx[n, c, i, j] = r * inv * (1 if gamma is None else gamma[c])
        if dgamma is not None:
            dgamma[c] += r * (x[n, c, i, j] - mean[c]) * inv
        if dbeta is not None:
            dbeta[c] += r
    return dx, dgamma, dbeta


def batchnorm2d_forward(x, mean, var, gamma=None, beta=None, eps=1e-5):
    """Vectorized: ``out = a[c] * x + s[c]`` (module docstring). Same contract as the naive one."""
    _check(x, mean, var, gamma, beta)
    a, s = _scale_shift(mean, var, gamma, beta, eps, x.dtype)
    out = x * a[:, None, None]
    out += s[:, None, None]
    return out, (x, mean, var, gamma, beta, eps)


def batchnorm2d_backward_data(dout, cache):
    """``dx = a[c] * dout`` (N, C, H, W)."""
    x, mean, var, gamma, beta, eps = cache
    a, _ = _scale_shift(mean, var, gamma, beta, eps, dout.dtype)
    return dout * a[:, None, None]


def batchnorm2d_backward(dout, cache):
    """Vectorized backward: ``dx, dgamma, dbeta`` like :func:`batchnorm2d_backward_naive`."""
    x, mean, var, gamma, beta, eps = cache
    xhat = (x - mean[:, None, None]) / np.sqrt(var + eps)[:, None, None]
    dgamma = None if gamma is None else (dout * xhat).sum(axis=(0, 2, 3))
    dbeta = None if beta is None else dout.sum(axis=(0, 2, 3))
    return batchnorm2d_backward_data(dout, cache), dgamma, dbeta
