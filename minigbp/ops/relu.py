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

The forward mask at exactly ``x == 0`` is a convention libraries disagree on, a switch
here (``at_zero``): ``"block"`` uses ``[x > 0]`` (autograd, Captum, zennit, iNNvestigate,
tf-keras-vis); ``"pass"`` uses ``[x >= 0]`` (TorchRay's guided backprop zeroes
``grad_input[input < 0]`` only). Which ReLUs follow the mode at all is decided per layer
in :func:`minigbp.conventions.rules_at`.
"""

import numpy as np

MODES = ("vanilla", "deconvnet", "guided")
AT_ZERO = ("block", "pass")


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


def _check_at_zero(at_zero):
    if at_zero not in AT_ZERO:
        raise ValueError(f"unknown relu_at_zero {at_zero!r}; expected one of {', '.join(AT_ZERO)}")


def relu_backward_naive(dout, cache, mode="vanilla", at_zero="block"):
    """One element at a time, the three rules of the module docstring."""
    check_mode(mode)
    _check_at_zero(at_zero)
    x = cache
    dx = np.zeros_like(dout)
    for i in np.ndindex(dout.shape):
        r = dout[i]
        on = x[i] > 0 or (at_zero == "pass" and x[i] == 0)  # the forward mask
        if mode == "vanilla":
            dx[i] = r if on else 0
        elif mode == "deconvnet":
            dx[i] = r if r > 0 else 0
        elif mode == "guided":
            dx[i] = r if (on and r > 0) else 0
    return dx


def relu_backward(dout, cache, mode="vanilla", at_zero="block"):
    """Signal through a ReLU in the given mode: the three rules of the module docstring.

    Parameters
    ----------
    dout : ndarray, same shape as the forward input ``x``: the signal ``R``
    cache : the ``x`` from :func:`relu_forward`
    mode : "vanilla" | "deconvnet" | "guided"
    at_zero : "block" (forward mask ``[x > 0]``, the default) | "pass" (``[x >= 0]``)

    Returns
    -------
    dx : new ndarray, same shape and dtype as ``dout``
    """
    check_mode(mode)
    _check_at_zero(at_zero)
    x = cache
    if mode == "vanilla":
        keep = forward_mask(x, at_zero)                  # R * [x > 0]
    elif mode == "deconvnet":
        keep = dout > 0                                  # R * [R > 0]
    elif mode == "guided":
        keep = forward_mask(x, at_zero) & (dout > 0)     # R * [x > 0] * [R > 0]
    return np.where(keep, dout, np.zeros((), dout.dtype))


def forward_mask(x, at_zero="block"):
    """Where the forward pass let ``x`` through: ``[x > 0]``, or ``[x >= 0]`` with ``at_zero="pass"``."""
    return x > 0 if at_zero == "block" else x >= 0
