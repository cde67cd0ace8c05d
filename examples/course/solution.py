"""Reference solution of ``assignment.ipynb``, for the instructor: do not hand it out.

One function per exercise, with the names and signatures of the notebook's exercise cells:

* :func:`relu_backward`   -- the ReLU's signal in the three modes;
* :func:`maxpool_forward` -- max pooling that records its switches;
* :func:`maxpool_backward` -- the signal routed through those switches;
* :func:`conv_backward`   -- ``dx`` as a transposed convolution (``dw``, ``db`` from the given code).

The functions the notebook gives the students (:func:`relu_forward`, :func:`conv_forward`,
:func:`conv_backward_weights`) are repeated first, identical to the notebook's cells, so that
this file runs on its own and can be checked like a student's.

Arrays are (N, C, H, W): batch, channels, height, width. No function writes into its inputs.
"""

import numpy as np

# ------------------------------------------------------- given in the notebook


def relu_forward(x):
    """ReLU forward: ``out = max(x, 0)`` elementwise.

    x: ndarray, any shape.
    Returns out (same shape as x) and cache = x (the backward pass needs the mask [x > 0]).
    """
    return np.maximum(x, 0), x


def conv_forward(x, w, b, stride=1, padding=0):
    """Convolution forward (a cross-correlation, as in PyTorch).

        out[n, f, i, j] = b[f] + sum_{c, kh, kw} w[f, c, kh, kw] * xp[n, c, i*S + kh, j*S + kw]

    with xp the input zero-padded by P cells on every side.

    x: (N, C, H, W); w: (F, C, HH, WW); b: (F,); stride S and padding P: ints.
    Returns out (N, F, Ho, Wo) with Ho = (H + 2P - HH) // S + 1, Wo = (W + 2P - WW) // S + 1,
    and cache = (x, w, b, stride, padding).
    """
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    S, P = stride, padding
    Ho = (H + 2 * P - HH) // S + 1
    Wo = (W + 2 * P - WW) // S + 1
    xp = np.pad(x, ((0, 0), (0, 0), (P, P), (P, P)))
    out = np.empty((N, F, Ho, Wo), dtype=np.result_type(x, w))
    for i in range(Ho):
        for j in range(Wo):
            patch = xp[:, :, i * S:i * S + HH, j * S:j * S + WW]  # (N, C, HH, WW): what out[:, :, i, j] reads
            out[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3])) + b  # (N, F)
    return out, (x, w, b, stride, padding)


def conv_backward_weights(dout, cache):
    """Gradients of the convolution's parameters.

        dw[f, c, kh, kw] = sum_{n, i, j} dout[n, f, i, j] * xp[n, c, i*S + kh, j*S + kw]
        db[f]            = sum_{n, i, j} dout[n, f, i, j]

    dout: (N, F, Ho, Wo); cache from conv_forward.
    Returns dw (F, C, HH, WW) and db (F,).
    """
    x, w, b, S, P = cache
    HH, WW = w.shape[2:]
    Ho, Wo = dout.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (P, P), (P, P)))
    dw = np.zeros(w.shape, dtype=dout.dtype)
    for i in range(Ho):
        for j in range(Wo):
            patch = xp[:, :, i * S:i * S + HH, j * S:j * S + WW]  # (N, C, HH, WW)
            dw += np.tensordot(dout[:, :, i, j], patch, axes=([0], [0]))  # (F, C, HH, WW)
    db = dout.sum(axis=(0, 2, 3))
    return dw, db


# ------------------------------------------------------------------ exercises


def relu_backward(dout, cache, mode="vanilla"):
    """ReLU backward in one of the three modes.

    With x the forward input and R = dout the signal arriving from above:

        vanilla:    dx = R * [x > 0]
        deconvnet:  dx = R * [R > 0]
        guided:     dx = R * [x > 0] * [R > 0]

    [.] is 1 where the condition holds, 0 elsewhere: at x == 0 the signal is blocked.

    dout: same shape as x; cache: from relu_forward; mode: "vanilla", "deconvnet" or "guided".
    Returns dx, same shape as dout.
    """
    x = cache
    if mode == "vanilla":
        keep = x > 0
    elif mode == "deconvnet":
        keep = dout > 0
    elif mode == "guided":
        keep = (x > 0) & (dout > 0)
    else:
        raise ValueError(f"unknown mode {mode!r}: expected 'vanilla', 'deconvnet' or 'guided'")
    return np.where(keep, dout, 0.0)


def maxpool_forward(x, kernel_size, stride=None, padding=0):
    """Max pooling forward that records the switches (where each window's maximum is).

        out[n, c, i, j] = max_{kh < HH, kw < WW} xp[n, c, i*SH + kh, j*SW + kw]

    with xp the input padded by P cells of -inf on every side (padding is never the maximum).
    The switch of a window is its first maximum in row-major order (PyTorch's rule for ties).

    x: (N, C, H, W); kernel_size: (HH, WW); stride: int S (SH = SW = S), or None for the
    kernel size (SH, SW = HH, WW: windows side by side); padding: int P.
    Returns out (N, C, Ho, Wo), Ho = (H + 2P - HH) // SH + 1, Wo = (W + 2P - WW) // SW + 1,
    and a cache holding the switches.
    """
    N, C, H, W = x.shape
    HH, WW = kernel_size
    SH, SW = (HH, WW) if stride is None else (stride, stride)
    P = padding
    Ho = (H + 2 * P - HH) // SH + 1
    Wo = (W + 2 * P - WW) // SW + 1
    xp = np.pad(x, ((0, 0), (0, 0), (P, P), (P, P)), constant_values=-np.inf)
    out = np.empty((N, C, Ho, Wo), dtype=x.dtype)
    rows = np.empty((N, C, Ho, Wo), dtype=np.intp)  # the switches: row and column in xp
    cols = np.empty((N, C, Ho, Wo), dtype=np.intp)
    for i in range(Ho):
        for j in range(Wo):
            window = xp[:, :, i * SH:i * SH + HH, j * SW:j * SW + WW].reshape(N, C, HH * WW)
            k = window.argmax(axis=2)  # argmax returns the first maximum, in row-major order
            out[:, :, i, j] = window.max(axis=2)
            rows[:, :, i, j] = i * SH + k // WW
            cols[:, :, i, j] = j * SW + k % WW
    return out, (x.shape, P, rows, cols)


def maxpool_backward(dout, cache):
    """Max pooling backward: each window sends its whole signal to its switch.

        dxp[n, c, switch(n, c, i, j)] += dout[n, c, i, j]

    and zero everywhere else; overlapping windows whose switch is the same cell add up.
    dx is dxp without its padding.

    dout: (N, C, Ho, Wo); cache from maxpool_forward.
    Returns dx (N, C, H, W).
    """
    (N, C, H, W), P, rows, cols = cache
    Ho, Wo = dout.shape[2:]
    dxp = np.zeros((N, C, H + 2 * P, W + 2 * P), dtype=dout.dtype)
    n = np.arange(N)[:, None]
    c = np.arange(C)[None, :]
    for i in range(Ho):
        for j in range(Wo):
            # one cell per (n, c) for this window; the loop over windows accumulates overlaps
            dxp[n, c, rows[:, :, i, j], cols[:, :, i, j]] += dout[:, :, i, j]
    return dxp[:, :, P:P + H, P:P + W].copy()


def conv_backward(dout, cache):
    """Convolution backward. The signal at the input is the transposed convolution:
    every output cell scatters the filters, weighted by its signal, back onto the patch it read,

        dxp[n, c, i*S + kh, j*S + kw] += sum_f w[f, c, kh, kw] * dout[n, f, i, j]

    and dx is dxp without its padding. (With stride 1: dout zero-padded by HH - 1 - P,
    convolved with the filters flipped in both spatial axes, f and c swapped.)
    dw and db come from conv_backward_weights.

    dout: (N, F, Ho, Wo); cache from conv_forward.
    Returns dx (N, C, H, W), dw (F, C, HH, WW), db (F,).
    """
    x, w, b, S, P = cache
    N, C, H, W = x.shape
    HH, WW = w.shape[2:]
    Ho, Wo = dout.shape[2:]
    dxp = np.zeros((N, C, H + 2 * P, W + 2 * P), dtype=dout.dtype)
    for i in range(Ho):
        for j in range(Wo):
            # (N, F) . (F, C, HH, WW) -> (N, C, HH, WW): the signal this output cell sends to its patch
            dxp[:, :, i * S:i * S + HH, j * S:j * S + WW] += np.tensordot(dout[:, :, i, j], w, axes=([1], [0]))
    dx = dxp[:, :, P:P + H, P:P + W].copy()
    dw, db = conv_backward_weights(dout, cache)
    return dx, dw, db
