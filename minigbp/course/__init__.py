"""Checkers for students' layer functions, and grading (``minigbp grade``).

A checker runs a student's forward (and backward) function on examples hypothesis draws --
shapes, hyperparameters and array entries, aimed at the hard cases (tied maxima, ``x == 0``,
padding, strides) -- compares with minigbp's ops in float64, and checks one *property* at a
time (``shape``, ``values``, ``ties``, ``zeros``, ``padding``, ``stride``, ``in-place``,
``dtype``; ReLU's backward one per mode). A failing property is reported with its smallest
case, expected against got at full precision, *why* the expected value is right, a hint
when the mistake is a known one, and a snippet that reproduces it::

    from minigbp import course

    course.check_maxpool_backward(max_pool_forward_naive, max_pool_backward_naive,
                                  conditions="cs231n", rules="any-subgradient")

Signatures (``style="minigbp"``: :mod:`minigbp.ops`' with PyTorch's keyword names)::

    conv_forward(x, w, b, stride=1, padding=0)               -> out, cache
    conv_backward(dout, cache)                               -> dx, dw, db
    maxpool_forward(x, kernel_size, stride=None, padding=0)  -> out, cache   (kernel_size a pair)
    maxpool_backward(dout, cache)                            -> dx
    avgpool_forward(x, kernel_size, stride=None, padding=0)  -> out, cache
    relu_forward(x)                                          -> out, cache
    relu_backward(dout, cache)   or (dout, cache, mode) when several modes are checked
    linear_forward(x, w, b)     w (out_features, in_features) -> out, cache
    batchnorm_forward(x, mean, var, gamma, beta)             -> out, cache  (inference, eps=1e-5)

``style="cs231n"`` (detected from a parameter named ``conv_param`` or ``pool_param``, or a
name starting ``affine``): ``conv_forward(x, w, b, conv_param)`` with ``{"stride", "pad"}``,
``max_pool_forward(x, pool_param)`` with ``{"pool_height", "pool_width", "stride"}``, and
``affine_forward(x, w, b)`` with ``x`` (N, d_1, ..., d_k) and ``w`` (D, M).

Options of every checker:

* ``conditions="pytorch" | "cs231n"``: which shapes are drawn. ``"cs231n"`` keeps to what
  CS231n's docstrings let students assume (convolutions tile the padded input exactly,
  pooling has no padding and its windows tile the input).
* ``rules="pytorch" | "any-subgradient"``: which answers are accepted where the derivative
  does not exist (tied maxima, a ReLU at ``x == 0``): PyTorch's choice, or any subgradient.
* The tolerance follows the returned dtype (1e-9 for float64, 1.2e-5 for float32, relative
  to the largest expected value); runs are derandomized and write no example database.
* ``properties=[...]`` checks some properties only; ``max_examples`` overrides the active
  hypothesis profile.

The ``check_*`` functions raise one ``AssertionError`` listing every failed property;
:func:`run` returns one :data:`Outcome` per property instead (what ``minigbp grade`` uses).
hypothesis and scipy are needed: ``pip install "minigbp[course]"``.
"""

from .cases import CONDITIONS
from .checkers import Outcome, assert_outcomes, run
from .rules import RULES, tolerance

__all__ = ["check_conv_forward", "check_conv_backward", "check_maxpool_forward", "check_maxpool_backward",
           "check_avgpool_forward", "check_avgpool_backward", "check_relu_forward", "check_relu_backward",
           "check_linear_forward", "check_linear_backward", "check_batchnorm_forward", "check_batchnorm_backward",
           "check_agreement", "run", "Outcome", "CONDITIONS", "RULES", "tolerance"]


def check_conv_forward(forward, *, style=None, conditions="pytorch", dilation=False, groups=False,
                       properties=None, max_examples=None):
    """Check a convolution forward against :func:`minigbp.ops.conv2d_forward`; ``dilation=`` and
    ``groups=`` are passed to it only when those flags are true."""
    assert_outcomes(run("conv", forward, style=style, conditions=conditions, dilation=dilation, groups=groups,
                        properties=properties, max_examples=max_examples))


def check_conv_backward(forward, backward, *, style=None, conditions="pytorch", rules="pytorch", dilation=False,
                        groups=False, properties=None, max_examples=None):
    """Check a convolution backward (``dx, dw, db`` from the student's own forward's cache) against
    :func:`minigbp.ops.conv2d_backward`: ``dx`` is the transposed convolution."""
    assert_outcomes(run("conv", forward, backward, style=style, conditions=conditions, rules=rules,
                        dilation=dilation, groups=groups, properties=properties, max_examples=max_examples))


def check_maxpool_forward(forward, *, style=None, conditions="pytorch", padding=True, dilation=False,
                          ceil_mode=False, properties=None, max_examples=None):
    """Check a max pooling forward against :func:`minigbp.ops.maxpool2d_forward`. Padding counts as
    ``-inf``; ``padding=``, ``dilation=``, ``ceil_mode=`` are passed only when those flags are true."""
    assert_outcomes(run("maxpool", forward, style=style, conditions=conditions, padding=padding,
                        dilation=dilation, ceil_mode=ceil_mode, properties=properties, max_examples=max_examples))


def check_maxpool_backward(forward, backward, *, style=None, conditions="pytorch", rules="pytorch", padding=True,
                           dilation=False, ceil_mode=False, properties=None, max_examples=None):
    """Check a max pooling backward: each window's signal goes to its maximum (``rules`` says which
    tied maximum), overlapping windows add up."""
    assert_outcomes(run("maxpool", forward, backward, style=style, conditions=conditions, rules=rules,
                        padding=padding, dilation=dilation, ceil_mode=ceil_mode, properties=properties,
                        max_examples=max_examples))


def check_avgpool_forward(forward, *, conditions="pytorch", padding=True, ceil_mode=False,
                          count_include_pad=False, properties=None, max_examples=None):
    """Check an average pooling forward against :func:`minigbp.ops.avgpool2d_forward`."""
    assert_outcomes(run("avgpool", forward, style="minigbp", conditions=conditions, padding=padding,
                        ceil_mode=ceil_mode, count_include_pad=count_include_pad, properties=properties,
                        max_examples=max_examples))


def check_avgpool_backward(forward, backward, *, conditions="pytorch", padding=True, ceil_mode=False,
                           count_include_pad=False, properties=None, max_examples=None):
    """Check an average pooling backward: each window spreads its signal evenly."""
    assert_outcomes(run("avgpool", forward, backward, style="minigbp", conditions=conditions, padding=padding,
                        ceil_mode=ceil_mode, count_include_pad=count_include_pad, properties=properties,
                        max_examples=max_examples))


def check_relu_forward(forward, *, properties=None, max_examples=None):
    """Check ``relu_forward(x) -> out`` or ``(out, cache)`` against ``max(x, 0)``."""
    assert_outcomes(run("relu", forward, properties=properties, max_examples=max_examples))


def check_relu_backward(forward, backward, *, modes=("vanilla",), rules="pytorch", properties=None,
                        max_examples=None):
    """Check a ReLU backward in each of ``modes`` (``backward(dout, cache, mode)`` when there are
    several, e.g. ``minigbp.MODES``) against :func:`minigbp.ops.relu_backward`."""
    assert_outcomes(run("relu", forward, backward, modes=modes, rules=rules, properties=properties,
                        max_examples=max_examples))


def check_linear_forward(forward, *, style=None, properties=None, max_examples=None):
    """Check a fully connected forward (minigbp's linear, or CS231n's ``affine_forward``)."""
    assert_outcomes(run("linear", forward, style=style, properties=properties, max_examples=max_examples))


def check_linear_backward(forward, backward, *, style=None, properties=None, max_examples=None):
    """Check a fully connected backward: ``dx`` (x's shape), ``dw``, ``db``."""
    assert_outcomes(run("linear", forward, backward, style=style, properties=properties,
                        max_examples=max_examples))


def check_batchnorm_forward(forward, *, properties=None, max_examples=None):
    """Check an inference-time batch normalization forward ``(x, mean, var, gamma, beta)``."""
    assert_outcomes(run("batchnorm", forward, properties=properties, max_examples=max_examples))


def check_batchnorm_backward(forward, backward, *, properties=None, max_examples=None):
    """Check its backward: ``dx, dgamma, dbeta``."""
    assert_outcomes(run("batchnorm", forward, backward, properties=properties, max_examples=max_examples))


def check_agreement(op, fast, naive, *, style=None, conditions="pytorch", rules="pytorch", modes=("vanilla",),
                    max_examples=None, **options):
    """Check that a student's fast version of ``op`` gives their naive version's results.

    ``fast`` and ``naive``: ``(forward, backward)`` pairs (``backward`` None: forwards only). On
    tied maxima and ``x == 0`` too, unless ``rules="any-subgradient"`` lets the two choose differently.
    """
    assert_outcomes(run(op, fast[0], fast[1], naive=naive, style=style, conditions=conditions, rules=rules,
                        modes=modes, max_examples=max_examples, **options))
