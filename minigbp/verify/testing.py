"""pytest helpers: check a framework's attribution function, or a student's layers, against minigbp.

For framework authors::

    from minigbp.verify.testing import assert_matches

    def test_guided_backprop_is_guided():
        assert_matches(make_model(), my_guided_backprop, mode="guided")

``assert_matches`` runs :func:`minigbp.verify.check` and raises ``AssertionError``
naming the mode the function matched instead (or "none", with the first layer
where it diverges), followed by the full report.

For courses, the layer checkers of :mod:`minigbp.course` (``check_conv_forward``,
``check_maxpool_backward``, ``check_relu_backward``, ...) are importable from here too.
"""

from ..course import (check_agreement, check_avgpool_backward, check_avgpool_forward, check_batchnorm_backward,
                      check_batchnorm_forward, check_conv_backward, check_conv_forward, check_linear_backward,
                      check_linear_forward, check_maxpool_backward, check_maxpool_forward, check_relu_backward,
                      check_relu_forward)
from ..ops.relu import check_mode

__all__ = ["assert_matches", "check_conv_forward", "check_conv_backward", "check_maxpool_forward",
           "check_maxpool_backward", "check_avgpool_forward", "check_avgpool_backward", "check_relu_forward",
           "check_relu_backward", "check_linear_forward", "check_linear_backward", "check_batchnorm_forward",
           "check_batchnorm_backward", "check_agreement"]


# ------------------------------------------------------------------- frameworks

def assert_matches(module, attribute_fn, mode="guided", **check_kwargs):
    """Assert that ``attribute_fn`` computes minigbp's ``mode`` on ``module``; return the report.

    Parameters as :func:`minigbp.verify.check` (``attribute_fn(model, x, target) -> tensor``).
    The failure message names what the function matched instead: another mode,
    none (with the first layer where it diverges), or the error it raised.
    """
    from .check import check

    check_mode(mode)
    report = check(module, attribute_fn, mode=mode, **check_kwargs)
    if report.ok:
        return report
    name = report.function
    if report.verdict == "error":
        got = f"it failed: {report.error}"
    elif report.verdict == "ambiguous":
        got = f"it matches {' and '.join(report.matches)} (indistinguishable on these inputs), not {mode!r}"
    elif report.verdict == "none":
        got = "it matches none of vanilla, deconvnet and guided"
        p = report.probe
        if p and p.possible:
            d = p.divergence.get(mode)
            if d is not None:
                got += f"; against {mode} it first diverges at {d.layer or 'the output seed'}"
        elif p:
            got += f" (per-layer probe not possible: {p.reason})"
    else:
        got = f"it matches {report.verdict!r} instead"
    raise AssertionError(f"{name} does not compute minigbp's {mode!r} mode: {got}\n\n{report}")
