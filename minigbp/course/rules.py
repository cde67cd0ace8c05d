"""Which answers the course checkers accept where the derivative does not exist.

Max pooling has no derivative where a window's maximum is tied, and a ReLU none at
``x == 0``. Every choice of subgradient there is a correct backward pass; ``rules`` says
which the checkers accept:

* ``"pytorch"``: PyTorch's (and minigbp's) choice -- the window's signal goes to the
  *first* tied maximum in row-major order, and a ReLU blocks the signal at ``x == 0``;
* ``"any-subgradient"``: any valid choice -- each window's signal goes to its tied maxima
  with non-negative shares summing to it (first, last, split evenly, ...), and at
  ``x == 0`` a ReLU passes any share of the signal between none and all of it.

Under ``"any-subgradient"`` the expected answer shown to a student is the valid answer
nearest to theirs (:func:`maxpool_nearest`, :func:`relu_nearest`).
"""

import numpy as np

from .. import ops
from ..ops.pool import _tie_shares

RULES = {
    "pytorch": "PyTorch's choice: a window's signal goes to its first tied maximum (row-major order); "
               "a ReLU blocks the signal at x == 0",
    "any-subgradient": "any subgradient: a window's signal goes to its tied maxima with non-negative shares "
                       "summing to it; at x == 0 a ReLU passes any share of the signal between none and all",
}


def tolerance(dtype):
    """The largest error accepted, relative to ``max(1, |expected|)``: 1e-9 for float64 results,
    100 machine epsilons for coarser floats (1.2e-5 for float32)."""
    return max(1e-9, 100 * float(np.finfo(dtype).eps)) if np.issubdtype(dtype, np.floating) else 1e-9


def accepted(got, want):
    """Is ``got`` within :func:`tolerance` of ``want`` (relative to ``max(1, |want|)``)?"""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape or not np.issubdtype(got.dtype, np.number):
        return False
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    return bool(np.all(np.abs(got.astype(np.float64) - want) <= tolerance(got.dtype) * scale))


def check_rules(rules):
    if rules not in RULES:
        raise ValueError(f"unknown rules {rules!r}; expected one of {', '.join(RULES)}")


def maxpool_nearest(got, dout, cache):
    """The answer allowed under "any-subgradient" nearest to ``got`` (in the L1 norm).

    Unknowns: the share ``s[w, t] >= 0`` of window ``w``'s signal that goes to its tied maximum
    ``t``, with ``sum_t s[w, t] = 1``. The answer they give is
    ``dx[p] = sum over (w, t) at position p of s[w, t] * dout[w]``; a small linear program finds
    the shares that bring ``dx`` closest to ``got`` (slacks ``u, v >= 0`` with
    ``dx[p] + u[p] - v[p] = got[p]``, minimizing ``sum(u + v)``). ``got`` is valid exactly when the
    closest answer is ``got`` itself.
    """
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix, hstack, identity, vstack

    _, g, _, _ = cache
    N, C, H, W = g.x_shape
    # candidates of every window: its tied maxima inside the input; a window without any
    # (NaN maximum, or a window beside the input) keeps its recorded switch
    _, targets = _tie_shares(np.ones(dout.shape), cache, "split")
    plane = np.arange(N * C).reshape(N, C, 1, 1, 1) * (H * W)  # where each (n, c) starts
    where = np.broadcast_to(plane, targets.shape) + targets
    w_idx, t_idx = np.nonzero((targets >= 0).reshape(-1, targets.shape[-1]))
    pos = where.reshape(-1, targets.shape[-1])[w_idx, t_idx]
    windows, w_row = np.unique(w_idx, return_inverse=True)
    signal = dout.reshape(-1).astype(np.float64)[w_idx]
    n_var, n_win, n_pos = len(w_idx), len(windows), N * C * H * W
    shares_sum = coo_matrix((np.ones(n_var), (w_row, np.arange(n_var))), shape=(n_win, n_var))
    spread = coo_matrix((signal, (pos, np.arange(n_var))), shape=(n_pos, n_var))
    eye = identity(n_pos, format="coo")
    a_eq = vstack([hstack([shares_sum, coo_matrix((n_win, 2 * n_pos))]),   # sum_t s[w, t] = 1
                   hstack([spread, eye, -eye])]).tocsr()                   # dx[p] + u[p] - v[p] = got[p]
    got64 = np.asarray(got, dtype=np.float64).reshape(-1)
    b_eq = np.concatenate([np.ones(n_win), got64])
    cost = np.concatenate([np.zeros(n_var), np.ones(2 * n_pos)])
    res = linprog(cost, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    if not res.success:  # pragma: no cover - the program is always feasible (slacks absorb anything)
        raise RuntimeError(f"maxpool_nearest: the linear program failed: {res.message}")
    u, v = res.x[n_var:n_var + n_pos], res.x[n_var + n_pos:]
    return (got64 - u + v).reshape(g.x_shape)


def relu_nearest(got, dout, x, mode):
    """The answer allowed under "any-subgradient" nearest to ``got``: the mode's rule everywhere,
    except where ``x == 0`` and the rule would pass ``dout`` if the mask were 1 (vanilla; guided with
    ``dout > 0``): there any value between 0 and ``dout`` is allowed, so ``got`` is clipped to it."""
    want = ops.relu_backward(dout, x, mode)
    if mode == "deconvnet":  # the forward mask plays no part
        return want
    free = (x == 0) if mode == "vanilla" else (x == 0) & (dout > 0)
    got = np.asarray(got, dtype=np.float64)
    return np.where(free, np.clip(got, np.minimum(0, dout), np.maximum(0, dout)), want)
