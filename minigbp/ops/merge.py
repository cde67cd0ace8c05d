"""Where branches meet: elementwise addition (residual connections) and concatenation
(DenseNet, Inception, SqueezeNet's Fire modules), naive and vectorized.

Addition of ``K`` inputs ``x_1 .. x_K``, all of one shape::

    out[p] = x_1[p] + x_2[p] + ... + x_K[p]          for every position p

Backward: ``d out / d x_k`` is the identity, so every input receives the whole signal::

    dx_k[p] = dout[p]

Concatenation along axis ``dim`` (channels, ``dim=1``, in a CNN): the inputs agree on
every other axis, and input ``k`` fills the slice ``[o_k, o_k + size_k)`` of the output
along ``dim``, where ``o_k`` is the sum of the sizes of the inputs before it::

    out[..., o_k + c, ...] = x_k[..., c, ...]

Backward: each input gets back its own slice of the signal::

    dx_k[..., c, ...] = dout[..., o_k + c, ...]

Both are linear, so they are the same in every backward mode. A value that feeds
several layers (the input of a residual block feeds the block and the addition)
receives the *sum* of their signals; that rule lives in the graph's backward pass
(:func:`minigbp.model.backward_tape`), not here.
"""

import numpy as np

__all__ = ["add_forward_naive", "add_backward_naive", "add_forward", "add_backward",
           "cat_forward_naive", "cat_backward_naive", "cat_forward", "cat_backward"]


def _check_add(xs, owner="add"):
    if not xs:
        raise ValueError(f"{owner}: needs at least one input")
    shapes = [x.shape for x in xs]
    if any(s != shapes[0] for s in shapes) or any(x.dtype != xs[0].dtype for x in xs):
        raise ValueError(f"{owner}: inputs must share one shape and dtype, got "
                         + ", ".join(f"{x.shape} {x.dtype}" for x in xs))


def add_forward_naive(*xs):
    """Loop version: ``out[p] = sum_k x_k[p]``. Returns ``out`` and the cache (the number of inputs)."""
    _check_add(xs)
    out = np.zeros_like(xs[0])
    for p in np.ndindex(out.shape):
        for x in xs:
            out[p] += x[p]
    return out, len(xs)


def add_backward_naive(dout, cache):
    """Loop version: ``dx_k[p] = dout[p]`` for each of the ``K`` inputs. Returns a tuple of K arrays."""
    dxs = tuple(np.zeros_like(dout) for _ in range(cache))
    for p in np.ndindex(dout.shape):
        for dx in dxs:
            dx[p] = dout[p]
    return dxs


def add_forward(*xs):
    """Vectorized addition; same contract as :func:`add_forward_naive`."""
    _check_add(xs)
    out = xs[0] + xs[1] if len(xs) > 1 else xs[0].copy()
    for x in xs[2:]:
        out += x
    return out, len(xs)


def add_backward(dout, cache):
    """Every input gets ``dout`` itself (read-only use: nothing downstream writes into it)."""
    return (dout,) * cache


def _check_cat(xs, dim, owner="cat"):
    if not xs:
        raise ValueError(f"{owner}: needs at least one input")
    ndim = xs[0].ndim
    if not -ndim <= dim < ndim:
        raise ValueError(f"{owner}: dim {dim} out of range for inputs of shape {xs[0].shape}")
    d = dim % ndim
    rest = [x.shape[:d] + x.shape[d + 1:] for x in xs]
    if any(x.ndim != ndim for x in xs) or any(r != rest[0] for r in rest) or any(x.dtype != xs[0].dtype for x in xs):
        raise ValueError(f"{owner}: inputs must agree on every axis but {dim} and share one dtype, got "
                         + ", ".join(f"{x.shape} {x.dtype}" for x in xs))
    return d


def cat_forward_naive(*xs, dim=1):
    """Loop version: input ``k`` is copied to the offset ``o_k`` along ``dim``.
    Returns ``out`` and the cache ``(dim, sizes)``."""
    d = _check_cat(xs, dim)
    sizes = [x.shape[d] for x in xs]
    shape = list(xs[0].shape)
    shape[d] = sum(sizes)
    out = np.zeros(shape, dtype=xs[0].dtype)
    offset = 0
    for x in xs:
        for p in np.ndindex(x.shape):
            q = p[:d] + (offset + p[d],) + p[d + 1:]
            out[q] = x[p]
        offset += x.shape[d]
    return out, (d, sizes)


def cat_backward_naive(dout, cache):
    """Loop version: ``dx_k`` is the slice ``[o_k, o_k + size_k)`` of ``dout`` along ``dim``."""
    d, sizes = cache
    dxs, offset = [], 0
    for size in sizes:
        shape = dout.shape[:d] + (size,) + dout.shape[d + 1:]
        dx = np.zeros(shape, dtype=dout.dtype)
        for p in np.ndindex(shape):
            dx[p] = dout[p[:d] + (offset + p[d],) + p[d + 1:]]
        dxs.append(dx)
        offset += size
    return tuple(dxs)


def cat_forward(*xs, dim=1):
    """Vectorized concatenation; same contract as :func:`cat_forward_naive`."""
    d = _check_cat(xs, dim)
    return np.concatenate(xs, axis=d), (d, [x.shape[d] for x in xs])


def cat_backward(dout, cache):
    """The inputs' slices of ``dout`` (views: backward never writes into a signal)."""
    d, sizes = cache
    return tuple(np.split(dout, np.cumsum(sizes)[:-1], axis=d))
