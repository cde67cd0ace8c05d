"""ReLU, the only op whose backward depends on the mode.

Forward: ``f = max(x, 0)``. Let ``R`` be the signal arriving from above.

=========  ===============================  =========================================
mode       signal sent down                 reference
=========  ===============================  =========================================
vanilla    ``R * [x > 0]``                  Simonyan et al. 2013; equals autograd
deconvnet  ``R * [R > 0]``                  Zeiler & Fergus 2013 (forward mask ignored)
guided     ``R * [x > 0] * [R > 0]``        Springenberg et al. 2014, Fig. 1
=========  ===============================  =========================================

``[.]`` is 1 where the condition holds and 0 elsewhere, so at exactly ``x == 0``
the signal is blocked (the subgradient PyTorch uses), and a zero ``R`` stays zero.
"""

import numpy as np

MODES = ("vanilla", "deconvnet", "guided")


def check_mode(mode):
    """Raise ``ValueError`` unless ``mode`` is one of :data:`MODES`."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")


def relu_forward(x):
    """``out = max(x, 0)`` elementwise.

    Parameters
    ----------
    x : ndarray, any shape

    Returns
    -------
    out : ndarray, same shape and dtype as ``x``
    cache : ndarray ``x`` (the forward mask ``[x > 0]`` is read from it)
    """
    return np.maximum(x, 0), x


def relu_backward_naive(dout, cache, mode="vanilla"):
    """One element at a time, the three rules of the module docstring."""
    check_mode(mode)
    x = cache
    dx = np.zeros_like(dout)
    for i in np.ndindex(dout.shape):
        r = dout[i]
        if mode == "vanilla":
            dx[i] = r if x[i] > 0 else 0
        elif mode == "deconvnet":
            dx[i] = r if r > 0 else 0
        else:  # guided
            dx[i] = r if (x[i] > 0 and r > 0) else 0
    return dx


def relu_backward(dout, cache, mode="vanilla"):
    """Signal through a ReLU in the given mode.

    Parameters
    ----------
    dout : ndarray, same shape as the forward input ``x``: the signal ``R``
    cache : the ``x`` from :func:`relu_forward`
    mode : "vanilla" | "deconvnet" | "guided"

    Returns
    -------
    dx : new ndarray, same shape and dtype as ``dout``
    """
    check_mode(mode)
    x = cache
    if mode == "vanilla":
        keep = x > 0  # R * [x > 0]
    elif mode == "deconvnet":
        keep = dout > 0  # R * [R > 0]
    else:
        keep = (x > 0) & (dout > 0)  # R * [x > 0] * [R > 0]
    return np.where(keep, dout, np.zeros((), dout.dtype))
