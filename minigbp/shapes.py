"""Output-size formulas, each derived once, and the argument checks that go with them.

Every layer and every functional op computes its output size here, so there is
exactly one place where ``floor``, ``ceil`` and the ceil-mode rule live.

Notation (one spatial axis; height and width are independent):

    H  input size            K  kernel size          S  stride
    P  padding on each side  D  dilation             Ho output size

A kernel with dilation ``D`` touches the taps ``0, D, 2D, ..., (K-1)D``, so its
*effective* extent is ``D(K-1) + 1``.
"""

import numpy as np

__all__ = [
    "pair",
    "conv_output_size",
    "pool_output_size",
    "pool_window_end",
    "adaptive_bins",
    "check_pool_args",
    "pool_args",
    "ceil_div",
    "same_padding",
]


def pair(value, name, owner, minimum=None):
    """Turn an int or a 2-sequence of ints into a tuple ``(h, w)``.

    ``owner`` names the layer or op in error messages; ``minimum`` (if given) is
    the smallest accepted value.
    """
    if isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, (int,)) or _is_np_int(value):
        value = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
        (isinstance(v, int) and not isinstance(v, bool)) or _is_np_int(v) for v in value
    ):
        value = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{owner}: {name} must be an int or a pair of ints, got {value!r}")
    if minimum is not None and min(value) < minimum:
        raise ValueError(f"{owner}: {name} must be >= {minimum}, got {value}")
    return value


def _is_np_int(v):
    return isinstance(v, np.integer)


def conv_output_size(H, K, S, P, D):
    """Output size of a convolution along one axis.

    Derivation: pad the input to ``H + 2P``. Output position ``o`` reads the taps
    ``o*S + k*D`` for ``k = 0..K-1``; its last tap must stay inside the padded
    input, ``o*S + D(K-1) <= H + 2P - 1``, so the largest valid ``o`` is
    ``floor((H + 2P - D(K-1) - 1) / S)`` and, counting ``o = 0``,

        Ho = floor((H + 2P - D(K-1) - 1) / S) + 1.

    Returns ``Ho``; a value below 1 means the input is too small (callers raise).
    """
    return (H + 2 * P - D * (K - 1) - 1) // S + 1


def pool_output_size(H, K, S, P, D, ceil_mode):
    """Output size of max/average pooling along one axis (PyTorch's rule).

    Floor mode is the convolution formula (see :func:`conv_output_size`).

    Ceil mode rounds up instead, which adds a last window that may run past
    the padded input:

        Ho = ceil((H + 2P - D(K-1) - 1) / S) + 1.

    That extra window is dropped again if it would *start* in the right-hand
    padding, i.e. if its start ``(Ho - 1) * S`` is ``>= H + P``: every window
    must start inside the input or the left padding.
    """
    span = H + 2 * P - D * (K - 1) - 1
    if ceil_mode:
        Ho = ceil_div(span, S) + 1
        if (Ho - 1) * S >= H + P:
            Ho -= 1
    else:
        Ho = span // S + 1
    return Ho


def pool_window_end(Ho, S, K, D):
    """Padded-coordinate length a pooling buffer needs so every window fits.

    Window ``o`` covers padded positions ``o*S .. o*S + D(K-1)``; the last one
    ends at ``(Ho - 1) S + D(K-1)``, so the buffer needs
    ``(Ho - 1) S + D(K-1) + 1`` entries. In ceil mode this can exceed
    ``H + 2P``: the extra cells hold the reduction's identity (-inf for max,
    0 for average, and they are never counted).
    """
    return (Ho - 1) * S + D * (K - 1) + 1


def adaptive_bins(H, Ho):
    """Bins of adaptive pooling: a list of ``(start, end)`` pairs, one per output.

    Output ``i`` of ``Ho`` averages input rows ``start = floor(i * H / Ho)`` up to
    ``end = ceil((i + 1) * H / Ho)`` (exclusive). The bins cover the input, are
    as even as integer boundaries allow, and overlap when ``Ho`` does not divide
    ``H`` (e.g. ``H=5, Ho=3``: ``[0,2), [1,4), [3,5)``). Same rule as PyTorch.
    """
    return [((i * H) // Ho, ceil_div((i + 1) * H, Ho)) for i in range(Ho)]


def pool_args(owner, kernel_size, stride=None, padding=0, dilation=1):
    """A pooling window's arguments as pairs ``(K, S, P, D)``, checked; ``stride`` None means
    the kernel size (PyTorch's default)."""
    K = pair(kernel_size, "kernel_size", owner)
    S = K if stride is None else pair(stride, "stride", owner)
    P, D = pair(padding, "padding", owner), pair(dilation, "dilation", owner)
    check_pool_args(owner, K, S, P, D)
    return K, S, P, D


def check_pool_args(owner, K, S, P, D):
    """Pooling argument rules (PyTorch's): all positive, ``P <= K // 2`` per axis."""
    for axis, (k, s, p, d) in enumerate(zip(K, S, P, D)):
        if k < 1 or s < 1 or d < 1 or p < 0:
            raise ValueError(
                f"{owner}: kernel_size, stride and dilation must be >= 1 and padding >= 0, "
                f"got kernel_size={K}, stride={S}, padding={P}, dilation={D}"
            )
        if p > k // 2:
            raise ValueError(
                f"{owner}: padding must be at most half the kernel size, "
                f"got padding={P} for kernel_size={K}"
            )


def ceil_div(a, b):
    """``ceil(a / b)`` for integers, without floating point (exact for negative ``a`` too)."""
    return -(-a // b)


def same_padding(H, K, S=1, D=1):
    """``(before, after)``: TensorFlow's and Keras's ``padding="same"`` along one axis.

    "same" asks for ``Ho = ceil(H / S)`` outputs. The last one reads the taps up to
    ``(Ho - 1)S + D(K-1)``, so the padded input must hold ``(Ho - 1)S + D(K-1) + 1``
    values; the ``total = max((Ho - 1)S + D(K-1) + 1 - H, 0)`` extra ones are split with
    the smaller half first, ``before = total // 2`` and ``after = total - before``. With
    an even kernel, or a stride that does not divide ``H``, ``after`` is one more than
    ``before``: padding PyTorch's symmetric ``padding=`` cannot express.
    """
    Ho = ceil_div(H, S)
    total = max((Ho - 1) * S + D * (K - 1) + 1 - H, 0)
    return total // 2, total - total // 2
