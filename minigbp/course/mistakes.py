"""Known mistakes in students' layer functions, as code: what a function with the mistake
would return, so that a failing result can be recognised and the message can name the mistake.

Each ``*_with_*`` function computes the mistaken answer for a case; :func:`same` and
:func:`same_corner` compare a student's result with it. The op specs
(:mod:`minigbp.course.specs`) turn a match into a hint.
"""

import numpy as np

from .. import ops


def same(a, b):
    """``a`` and ``b`` have one shape and agree to 1e-6 (a mistake is recognised, not graded)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype != object and np.allclose(a, b, rtol=1e-6, atol=1e-6)


def same_corner(a, b):
    """``a`` equals the top-left corner of ``b`` (an output sized for other hyperparameters)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != b.ndim or a.size == 0 or any(i > j for i, j in zip(a.shape, b.shape)):
        return False
    return same(a, b[tuple(slice(0, n) for n in a.shape)])


def empty_crop(case, got):
    """The hint for an empty result at pad 0 (the ``a[p:-p]`` crop), or None."""
    if case.params.get("padding", 0) == 0 and any(np.asarray(g).size == 0 for g in got if g is not None):
        return ("a result is empty: with pad = 0, a crop written a[p:-p] is a[0:0], which is empty. "
                "Crop with explicit ends instead: a[:, :, p:p + H, p:p + W].")
    return None


def conv_dx_with_unflipped_filters(case):
    """dx as a correlation of dout with the filters, not flipped (None for dilation or groups)."""
    x, w, b = case.inputs.values()
    flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1])
    p = case.params
    if p.get("dilation", 1) != 1 or p.get("groups", 1) != 1:
        return None
    return ops.conv2d_backward(case.dout, ops.conv2d_forward(x, flipped, b, p["stride"], p["padding"])[1])[0]


def conv_dx_with_assignment(case):
    """dx when each window's contribution overwrites (``=``) instead of adding (``+=``)."""
    x, w, b = case.inputs.values()
    p = case.params
    if p.get("dilation", 1) != 1 or p.get("groups", 1) != 1:
        return None
    S, P = p["stride"], p["padding"]
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    dxp = np.zeros((N, C, H + 2 * P, W + 2 * P))
    for n in range(N):
        for f in range(F):
            for i in range(case.dout.shape[2]):
                for j in range(case.dout.shape[3]):
                    dxp[n, :, i * S:i * S + HH, j * S:j * S + WW] = w[f] * case.dout[n, f, i, j]
    return dxp[:, :, P:P + H, P:P + W]


def _windows(x, HH, WW, S):
    N, C, H, W = x.shape
    for n in range(N):
        for c in range(C):
            for i in range((H - HH) // S + 1):
                for j in range((W - WW) // S + 1):
                    yield n, c, i, j, (slice(i * S, i * S + HH), slice(j * S, j * S + WW))


def maxpool_dx_with_every_tie(x, dout, HH, WW, S):
    """dx when every tied maximum of a window receives the window's whole signal."""
    dx = np.zeros(x.shape)
    for n, c, i, j, (r, s) in _windows(x, HH, WW, S):
        win = x[n, c, r, s]
        dx[n, c, r, s] += (win == win.max()) * dout[n, c, i, j]
    return dx


def maxpool_dx_with_assignment(x, dout, HH, WW, S, overwrite):
    """dx when a window's signal overwrites (``=``) instead of adding: the whole window, or its switch."""
    dx = np.zeros(x.shape)
    for n, c, i, j, (r, s) in _windows(x, HH, WW, S):
        win = x[n, c, r, s]
        k = np.unravel_index(np.argmax(win), win.shape)
        if overwrite == "window":
            mask = np.zeros(win.shape)
            mask[k] = 1
            dx[n, c, r, s] = mask * dout[n, c, i, j]
        else:
            dx[n, c, r.start + k[0], s.start + k[1]] = dout[n, c, i, j]
    return dx
