"""Numerical gradients by central differences, and the relative error to compare arrays.

For a scalar function ``f``, the central difference

    df/dx_i ~= (f(x + h e_i) - f(x - h e_i)) / (2h)

has error O(h^2) for smooth ``f``. ReLU and max pooling are not smooth at their
kinks (x == 0, tied maxima), so check gradients on inputs that stay away from
them, e.g. random float64 data with ``h`` around 1e-5 (the default).
"""

import copy

import numpy as np

__all__ = ["numerical_gradient", "numerical_gradient_array", "rel_error", "check_layer"]


def numerical_gradient(f, x, h=1e-5):
    """Gradient of a scalar function ``f`` at ``x`` (any shape), one coordinate at a time.

    ``x`` is not modified: each probe works on a copy.
    """
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        grad[i] = (f(xp) - f(xm)) / (2 * h)
    return grad


def numerical_gradient_array(f, x, dout, h=1e-5):
    """Gradient of ``sum(f(x) * dout)`` at ``x``: what a backward pass given ``dout`` returns."""
    return numerical_gradient(lambda z: np.sum(f(z) * dout), x, h)


def rel_error(got, want):
    """How far ``got`` is from the reference ``want``, relative to the reference's size::

        max |got - want| / max |want|

    the one relative error minigbp uses (gradient checks, traces, ``verify``). One number for
    the whole array, so the many near-zero entries of a saliency map do not dominate as they
    would elementwise. Computed in float64. 0 when the arrays are equal (NaN matching NaN,
    infinities matching); measured against ``max |got|`` when ``want`` is all zeros; ``inf``
    when that is zero too, or when a NaN or an infinity appears on one side only.
    Around 1e-7 or less means agreement in float64; 1e-2 or more means a bug.

    Raises ``ValueError`` when the shapes differ.
    """
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise ValueError(f"rel_error: shapes differ, {got.shape} vs {want.shape}")
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    with np.errstate(invalid="ignore"):
        err = float(np.where(same, 0.0, np.abs(got - want)).max(initial=0.0))
    if err == 0:
        return 0.0
    scale = _finite_max(want) or _finite_max(got)
    return err / scale if np.isfinite(err) and scale > 0 else float("inf")


def _finite_max(a):
    return float(np.abs(a[np.isfinite(a)]).max(initial=0.0))


def check_layer(layer, x, dout=None, h=1e-5, seed=0):
    """Compare a layer's analytic vanilla gradients with central differences.

    Works on a float64 copy of ``layer`` (a single layer or a Sequential), so
    the caller's parameters are untouched and the check is not limited by
    float32 rounding.

    Parameters
    ----------
    layer : a minigbp layer or Sequential
    x : input, converted to float64
    dout : upstream signal shaped like the output (standard normal if None)

    Returns
    -------
    dict ``{"x": err, "weight": err, "bias": err, ...}`` of :func:`rel_error` values
    (parameter names as in ``state_dict()``; a single layer's without prefix).
    """
    from .sequential import Sequential

    single = not isinstance(layer, Sequential)
    model = copy.deepcopy(Sequential(layer) if single else layer)
    model.load_state_dict({k: v.astype(np.float64) for k, v in model.state_dict().items()})
    x = np.array(x, dtype=np.float64)
    out, tape = model.forward(x)
    dout = np.random.default_rng(seed).standard_normal(out.shape) if dout is None else np.array(dout, np.float64)
    dx, grads = model.backward_with_grads(dout, tape)
    errors = {"x": rel_error(dx, numerical_gradient_array(model, x, dout, h))}
    for name, analytic in grads.items():
        original = model.state_dict()[name]

        def f(p, name=name):
            model.load_state_dict({name: p}, strict=False)
            return model(x)

        numeric = numerical_gradient_array(f, original, dout, h)
        model.load_state_dict({name: original}, strict=False)
        errors[name[2:] if single else name] = rel_error(analytic, numeric)
    return errors
