"""What the course checkers know about each op: its properties, how a student's function is
called (minigbp's signature or CS231n's), minigbp's answer, *why* that answer is right, and
the known mistakes worth a hint.

A property is one facet of an op, checked on its own examples so that a grade can give
points facet by facet: ``shape`` (results have the right shapes), ``values`` (plain cases),
``ties`` (tied maxima), ``zeros`` (a ReLU at ``x == 0``), ``padding``, ``stride``,
``in-place`` (inputs, ``dout`` and the cache are left as they were) and ``dtype`` (float32
inputs work; float64 inputs keep float64 precision); ReLU's backward has one per mode.
"""

import inspect

import numpy as np

from .. import ops
from . import cases
from .mistakes import (conv_dx_with_assignment, conv_dx_with_unflipped_filters, empty_crop,
                       maxpool_dx_with_assignment, maxpool_dx_with_every_tie, same, same_corner)
from .rules import accepted, maxpool_nearest, relu_nearest


def style_of(fn, style, param):
    """``style`` checked, or detected: CS231n's when ``fn`` has a parameter named ``param``."""
    if style is not None:
        if style not in ("minigbp", "cs231n"):
            raise ValueError(f"style must be 'minigbp' or 'cs231n', got {style!r}")
        return style
    try:
        names = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return "minigbp"
    return "cs231n" if param and param in names else "minigbp"


class Property:
    """``name``, ``about`` (one line for the student) and ``draw``: restrictions on the examples
    (``values``: a kind of :data:`cases.KINDS`; ``stride``, ``padding``, ``dtype``, ``zeros``, ``mode``)."""

    def __init__(self, name, about, **draw):
        self.name, self.about, self.draw = name, about, draw


SHAPE = Property("shape", "the results have the right shapes", values="int")
IN_PLACE = Property("in-place", "the inputs, dout and the cache are left unchanged", values="int")
DTYPE = Property("dtype", "results are floating-point arrays; float64 inputs keep float64 precision",
                 values="distinct", dtype="either")


class Spec:
    """One op. Subclasses set the class attributes and the methods that differ."""

    family = ""           # "conv"
    cs231n_param = None   # the parameter that marks CS231n's signature ("conv_param")
    grads = ("dx",)       # what the backward returns
    forward_properties = ()
    backward_properties = ()
    draw_case = None      # a function of cases.py
    why_forward = ""

    def __init__(self, **options):
        self.options = options

    def properties(self, direction, conditions, modes=("vanilla",)):
        props = self.forward_properties if direction == "forward" else self.backward_properties
        return [p for p in props if self.applies(p, conditions)]

    def applies(self, prop, conditions):
        return True

    def beyond_cs231n(self, case):
        """How ``case`` goes beyond the shapes CS231n's docstrings let students assume, or None."""
        p, x = case.params, case.inputs["x"]
        if "kernel_size" in p:
            HH, WW = p["kernel_size"]
        elif "w" in case.inputs and x.ndim == 4 and self.family == "conv":
            HH, WW = case.inputs["w"].shape[2:]
        else:
            return None
        S, P = p["stride"], p.get("padding", 0)
        if self.family != "conv" and P:
            return f"it pads the pooling input (padding={P})"
        H, W = x.shape[2:]
        rest = ((H + 2 * P - HH) % S, (W + 2 * P - WW) % S)
        if any(rest):
            return (f"its windows do not tile the {'padded ' if P else ''}input exactly: "
                    f"(H + 2P - HH) % stride = {rest[0]}, (W + 2P - WW) % stride = {rest[1]}")
        return None

    def style_of(self, fn):
        """CS231n's signature when ``fn`` has a parameter named ``cs231n_param``, else minigbp's."""
        return style_of(fn, None, self.cs231n_param)

    def agreement(self, rules):
        """The property of a fast version checked against the student's own naive version: the hard
        cases (ties, zeros, padding, any stride) unless any subgradient is allowed at ties."""
        return Property("agrees with naive", "the fast version gives the naive version's results",
                        values="int" if rules == "pytorch" else "distinct", stride="mixed", padding="any")

    def documented_cache(self, case):
        """The cache CS231n's docstrings prescribe for ``case`` (new arrays), or None: what a backward
        is given when the student's own forward fails, so that it is graded on its own."""
        return None

    def describe(self, case):
        """The hyperparameters of ``case`` in the words of the student's signature."""
        return dict(case.params)

    def forward_call(self, case):
        """``(args, kwargs)`` for the student's forward."""
        return tuple(case.inputs.values()), {}

    def reference(self, case):
        """minigbp's ``out, cache``."""
        raise NotImplementedError

    def reference_backward(self, case, cache, mode):
        """minigbp's gradients (a tuple in the order of ``grads``), PyTorch's rules."""
        raise NotImplementedError

    def expected_backward(self, case, cache, got, rules, mode):
        """What the student's gradients are compared with: minigbp's under ``"pytorch"`` rules."""
        return self.reference_backward(case, cache, mode)

    def why_backward(self, rules, mode):
        return ""

    def hints(self, direction, case, got, want, rules, mode):
        """Known mistakes that explain ``got`` (a tuple like ``grads``, or ``(out,)``)."""
        return []


# ------------------------------------------------------------------------ convolution

CONV_WHY = ("out[n, f, i, j] = b[f] + sum over c, kh, kw of x_pad[n, c, i*S + kh, j*S + kw] * w[f, c, kh, kw], "
            "where x_pad is x with P zeros on each side (a cross-correlation: the filters are not flipped); "
            "the output is (H + 2P - HH) // S + 1 by (W + 2P - WW) // S + 1.")
CONV_BACK_WHY = ("dx is the transposed convolution: each dout[n, f, i, j] sends w[f] * dout[n, f, i, j] back onto "
                 "the window it came from, dx_pad[n, :, i*S:i*S+HH, j*S:j*S+WW] += w[f] * dout[n, f, i, j] "
                 "(overlapping windows add up), and dx is dx_pad without the padding; dw[f] is the sum over "
                 "n, i, j of dout[n, f, i, j] times that window of x_pad; db[f] is the sum of dout[:, f].")


class Conv(Spec):
    family, cs231n_param, grads = "conv", "conv_param", ("dx", "dw", "db")
    draw_case = staticmethod(cases.conv)
    why_forward = CONV_WHY
    forward_properties = (
        SHAPE,
        Property("values", "stride 1, no padding", values="distinct", stride="1", padding="0"),
        Property("padding", "zero padding of 1 or 2", values="distinct", stride="1", padding=">0"),
        Property("stride", "stride 2 or 3", values="distinct", stride=">1", padding="any"),
        IN_PLACE, DTYPE)
    backward_properties = forward_properties

    def forward_call(self, case):
        x, w, b = case.inputs.values()
        p = case.params
        if case.style == "cs231n":
            return (x, w, b, {"stride": p["stride"], "pad": p["padding"]}), {}
        return (x, w, b), dict(p)

    def documented_cache(self, case):
        if case.style != "cs231n":
            return None
        x, w, b = (a.copy() for a in case.inputs.values())
        return x, w, b, {"stride": case.params["stride"], "pad": case.params["padding"]}

    def describe(self, case):
        if case.style == "cs231n":
            return {"stride": case.params["stride"], "pad": case.params["padding"]}
        return dict(case.params)

    def reference(self, case):
        p = case.params
        return ops.conv2d_forward(*case.inputs.values(), p["stride"], p["padding"], p.get("dilation", 1),
                                  p.get("groups", 1))

    def reference_backward(self, case, cache, mode):
        return ops.conv2d_backward(case.dout, cache)

    def why_backward(self, rules, mode):
        return CONV_BACK_WHY

    def hints(self, direction, case, got, want, rules, mode):
        found = [empty_crop(case, got)]
        x, w, b = case.inputs.values()
        p = dict(case.params)
        if direction == "forward":
            if p["padding"] != 1 and p.get("dilation", 1) == 1 and p.get("groups", 1) == 1 \
                    and same_corner(got[0], ops.conv2d_forward(x, w, b, p["stride"], 1)[0]):
                found.append("your output is what padding 1 gives: is the padding hard-coded instead of read "
                             "from the parameters?")
        elif not same(got[0], want[0]):
            if same(got[0], conv_dx_with_unflipped_filters(case)):
                found.append("your dx slides the filters over dout without flipping them (a correlation). "
                             "The transposed convolution scatters: dx_pad[n, :, i*S:i*S+HH, j*S:j*S+WW] += "
                             "w[f] * dout[n, f, i, j], which is a convolution with the *flipped* filters.")
            if same(got[0], conv_dx_with_assignment(case)):
                found.append("your dx keeps only the last window at places where windows overlap: use += "
                             "(dx_pad[...] += w[f] * dout[...]), not =.")
        return [h for h in found if h]


# ------------------------------------------------------------------------ max pooling

MAXPOOL_WHY = ("out[n, c, i, j] is the maximum of window (i, j), x[n, c, i*S:i*S+HH, j*S:j*S+WW]; padding counts "
               "as -inf, so it is never the maximum (PyTorch's rule); the output is (H + 2P - HH) // S + 1 by "
               "(W + 2P - WW) // S + 1.")
MAXPOOL_BACK_WHY = {
    "pytorch": ("each window's signal dout[n, c, i, j] goes to the position of the window's maximum (the switch "
                "the forward pass records); when several entries tie for the maximum, PyTorch sends all of it to "
                "the first of them in row-major order; windows that overlap add up (+=)."),
    "any-subgradient": ("each window's signal dout[n, c, i, j] goes to the window's maximum; when several entries "
                        "tie, any non-negative shares of it that sum to dout[n, c, i, j] are a valid subgradient "
                        "(first, last, split evenly, ...); windows that overlap add up (+=). The expected value "
                        "shown is the valid answer nearest to yours."),
}


POOL_VALUES = Property("values", "windows side by side (stride = window size)", values="distinct", stride="kernel")
POOL_STRIDE = Property("stride", "stride different from the window size: overlapping windows, or gaps",
                       values="distinct", stride="other")


class MaxPool(Spec):
    family, cs231n_param = "maxpool", "pool_param"
    draw_case = staticmethod(cases.pool)
    why_forward = MAXPOOL_WHY
    forward_properties = (
        SHAPE, POOL_VALUES, POOL_STRIDE,
        Property("padding", "padding, with negative inputs", values="negative", padding=">0"),
        IN_PLACE, DTYPE)
    backward_properties = forward_properties[:2] + (
        Property("ties", "windows whose maximum is tied (small integers)", values="int", stride="mixed",
                 ties=True),) + forward_properties[2:]

    def applies(self, prop, conditions):
        return prop.name != "padding" or (conditions == "pytorch" and self.options.get("padding", True))

    def forward_call(self, case):
        (x,), p = case.inputs.values(), case.params
        if case.style == "cs231n":
            HH, WW = p["kernel_size"]
            return (x, {"pool_height": HH, "pool_width": WW, "stride": p["stride"]}), {}
        kwargs = {"stride": p["stride"]}
        if self.options.get("padding", True):
            kwargs["padding"] = p["padding"]
        for k in ("dilation", "ceil_mode"):
            if self.options.get(k):
                kwargs[k] = p.get(k, 1 if k == "dilation" else False)
        return (x, p["kernel_size"]), kwargs

    def documented_cache(self, case):
        if case.style != "cs231n":
            return None
        return case.inputs["x"].copy(), self.describe(case)

    def describe(self, case):
        p = case.params
        if case.style == "cs231n":
            return {"pool_height": p["kernel_size"][0], "pool_width": p["kernel_size"][1], "stride": p["stride"]}
        return dict(p)

    def reference(self, case):
        p = case.params
        return ops.maxpool2d_forward(case.inputs["x"], p["kernel_size"], p["stride"], p["padding"],
                                     p.get("dilation", 1), p.get("ceil_mode", False))

    def reference_backward(self, case, cache, mode):
        return (ops.maxpool2d_backward(case.dout, cache),)

    def expected_backward(self, case, cache, got, rules, mode):
        if rules == "pytorch" or got[0] is None or np.shape(got[0]) != case.inputs["x"].shape:
            return self.reference_backward(case, cache, mode)
        for ties in ("first", "last", "split"):  # the usual choices, before the linear program
            usual = ops.maxpool2d_backward(case.dout, cache, ties=ties)
            if accepted(got[0], usual):
                return (usual,)
        return (maxpool_nearest(got[0], case.dout, cache),)

    def why_backward(self, rules, mode):
        return MAXPOOL_BACK_WHY[rules]

    def hints(self, direction, case, got, want, rules, mode):
        found = [empty_crop(case, got)]
        x, p = case.inputs["x"], case.params
        HH, WW = p["kernel_size"]
        S = p["stride"]
        plain = p["padding"] == 0 and p.get("dilation", 1) == 1 and not p.get("ceil_mode")
        if direction == "forward":
            if p["padding"] and same(got[0], ops.maxpool2d_forward(
                    np.pad(x, ((0, 0), (0, 0), (p["padding"],) * 2, (p["padding"],) * 2)), (HH, WW), S)[0]):
                found.append("your output is what zero padding gives: in max pooling the padding counts as -inf "
                             "(it can never be a window's maximum), so an all-negative window's maximum is "
                             "negative, not 0.")
            fits = all(k <= h for k, h in zip((max(HH, WW, S),) * 2, x.shape[2:]))
            if plain and fits and HH != WW and same_corner(got[0], ops.maxpool2d_forward(x, (HH, HH), S)[0]):
                found.append("your output is what square pool_height x pool_height windows give: is "
                             "pool_height used for the width too?")
            elif plain and fits and S not in (HH, WW) \
                    and same_corner(got[0], ops.maxpool2d_forward(x, (S, S), S)[0]):
                found.append("your output is what windows of stride x stride give: is the window size taken "
                             "from the stride instead of pool_height/pool_width (kernel_size)?")
            return [h for h in found if h]
        if not plain or np.shape(got[0]) != x.shape:
            return [h for h in found if h]
        _, cache = ops.maxpool2d_forward(x, (HH, WW), S)
        dout = case.dout
        if same(got[0], maxpool_dx_with_every_tie(x, dout, HH, WW, S)):
            found.append("your dx gives the whole signal to *every* tied maximum of a window (a mask x == max "
                         "times dout): the window's signal is then counted several times. Send it to one of "
                         "them (PyTorch: the first), or split it.")
        for overwrite in ("window", "switch"):
            if same(got[0], maxpool_dx_with_assignment(x, dout, HH, WW, S, overwrite)):
                found.append("your dx assigns (=) where it should add (+=): where windows overlap, a later "
                             "window's assignment overwrites what earlier windows sent (and a position that is "
                             "the maximum of several windows must receive the sum of their signals).")
                break
        if rules == "pytorch":
            for ties, what in (("last", "the last tied maximum"), ("split", "all tied maxima in equal shares")):
                if same(got[0], ops.maxpool2d_backward(dout, cache, ties=ties)):
                    found.append(f"your dx sends each window's signal to {what}. That is a valid subgradient, but "
                                 "these rules ask for PyTorch's choice, the first tied maximum in row-major order "
                                 "(np.argmax's). If your course accepts any subgradient, grade with "
                                 "rules='any-subgradient' (--rules any-subgradient).")
        return [h for h in found if h]


# ------------------------------------------------------------------------ average pooling

AVGPOOL_WHY = ("out[n, c, i, j] is the sum of window (i, j)'s entries inside the input divided by the window's "
               "size: its area clipped to [-P, H + P) (count_include_pad=True, PyTorch's default) or the part of "
               "it inside the input (count_include_pad=False).")
AVGPOOL_BACK_WHY = ("each window spreads dout[n, c, i, j] / divisor evenly over its entries inside the input "
                    "(the divisor of the forward pass); windows that overlap add up (+=).")


class AvgPool(MaxPool):
    family = "avgpool"
    why_forward = AVGPOOL_WHY
    draw_case = staticmethod(lambda *a: cases.pool(*a, kind_of_pool="avg"))
    forward_properties = (
        SHAPE, POOL_VALUES, POOL_STRIDE,
        Property("padding", "padding (the divisor counts it, or not)", values="distinct", padding=">0"),
        IN_PLACE, DTYPE)
    backward_properties = forward_properties

    def forward_call(self, case):
        args, kwargs = super().forward_call(case)
        kwargs.pop("dilation", None)
        if self.options.get("count_include_pad"):
            kwargs["count_include_pad"] = case.params.get("count_include_pad", True)
        return args, kwargs

    def reference(self, case):
        p = case.params
        return ops.avgpool2d_forward(case.inputs["x"], p["kernel_size"], p["stride"], p["padding"],
                                     p.get("ceil_mode", False), p.get("count_include_pad", True))

    def reference_backward(self, case, cache, mode):
        return (ops.avgpool2d_backward(case.dout, cache),)

    def expected_backward(self, case, cache, got, rules, mode):
        return self.reference_backward(case, cache, mode)

    def why_backward(self, rules, mode):
        return AVGPOOL_BACK_WHY

    def hints(self, direction, case, got, want, rules, mode):
        p = dict(case.params)
        found = [empty_crop(case, got)]
        if p["padding"]:
            p["count_include_pad"] = not p.get("count_include_pad", True)
            other = self.reference(cases.Case(p, case.inputs, case.style))
            if direction == "forward" and same(got[0], other[0]):
                found.append("your divisors are those of count_include_pad="
                             f"{p['count_include_pad']}: with count_include_pad={not p['count_include_pad']} "
                             "the padded entries are " + ("counted." if not p["count_include_pad"] else "not counted."))
        return [h for h in found if h]


# ------------------------------------------------------------------------ ReLU

RELU_WHY = "out = max(x, 0), elementwise; the output has x's shape."
RELU_BACK_WHY = {
    "vanilla": "ReLU's gradient (the vanilla mode): dx = dout * [x > 0], the signal passes where the input "
               "was positive.",
    "deconvnet": "deconvnet: dx = dout * [dout > 0] (the signal is rectified; the forward input plays no part).",
    "guided": "guided backpropagation: dx = dout * [x > 0] * [dout > 0] (both masks).",
}
RELU_AT_ZERO = {
    "pytorch": " At x == 0 the signal is blocked: [x > 0] is 0 there (PyTorch's subgradient).",
    "any-subgradient": " At x == 0 any share of the signal between none and all of it is a valid subgradient; "
                       "the expected value shown is the valid answer nearest to yours.",
}


class ReLU(Spec):
    family = "relu"
    draw_case = staticmethod(cases.relu)
    why_forward = RELU_WHY
    forward_properties = (SHAPE, Property("values", "values of every sign, zeros included", values="int"),
                          IN_PLACE, DTYPE)

    def properties(self, direction, conditions, modes=("vanilla",)):
        if direction == "forward":
            return list(self.forward_properties)
        if tuple(modes) == ("vanilla",):
            rules = [Property("values", "dx = dout * [x > 0], with x never 0", values="distinct", mode="vanilla")]
            zeros = "x == 0 exactly"
        else:
            rules = [Property(m, f"the {m} rule, with x and dout never 0", values="distinct", mode=m)
                     for m in modes]
            zeros = "x == 0 exactly, in every mode"
        return [SHAPE] + rules + [Property("zeros", zeros, values="int", zeros=True), IN_PLACE, DTYPE]

    def documented_cache(self, case):
        return case.inputs["x"].copy()

    def reference(self, case):
        return ops.relu_forward(case.inputs["x"])

    def reference_backward(self, case, cache, mode):
        return (ops.relu_backward(case.dout, case.inputs["x"], mode),)

    def expected_backward(self, case, cache, got, rules, mode):
        if rules == "pytorch" or got[0] is None or np.shape(got[0]) != case.dout.shape:
            return self.reference_backward(case, cache, mode)
        return (relu_nearest(got[0], case.dout, case.inputs["x"], mode),)

    def why_backward(self, rules, mode):
        return RELU_BACK_WHY[mode] + (RELU_AT_ZERO[rules] if mode != "deconvnet" else "")

    def hints(self, direction, case, got, want, rules, mode):
        if direction == "forward" or np.shape(got[0]) != case.dout.shape:
            return []
        x, dout, found = case.inputs["x"], case.dout, []
        if rules == "pytorch" and mode != "deconvnet" and same(got[0], ops.relu_backward(dout, x, mode, "pass")):
            found.append("your dx lets the signal through at x == 0 (a mask x >= 0). That is a valid subgradient, "
                         "but these rules ask for PyTorch's choice, [x > 0]. If your course accepts any "
                         "subgradient, grade with rules='any-subgradient' (--rules any-subgradient).")
        wrong_away_from_zero = not same(np.where(x != 0, got[0], 0), np.where(x != 0, want[0], 0))
        for other in ops.MODES:
            if other != mode and wrong_away_from_zero and same(got[0], ops.relu_backward(dout, x, other)):
                found.append(f"your {mode} result is what the {other} rule gives: {RELU_BACK_WHY[other]}")
                break
        return found


# ------------------------------------------------------------------------ affine / linear

class Linear(Spec):
    family, grads = "linear", ("dx", "dw", "db")
    draw_case = staticmethod(cases.linear)
    forward_properties = (SHAPE, Property("values", "plain values", values="distinct"), IN_PLACE, DTYPE)
    backward_properties = forward_properties

    def style_of(self, fn):
        """CS231n's affine (w of shape (D, M), x of any rank) for a function named affine_*."""
        return "cs231n" if "affine" in getattr(fn, "__name__", "") else "minigbp"

    @property
    def why_forward(self):
        return ("minigbp's linear: out = x @ w.T + b with w (out_features, in_features), PyTorch's layout; "
                "CS231n's affine: out = x.reshape(N, D) @ w + b with w (D, M), x (N, d_1, ..., d_k).")

    def documented_cache(self, case):
        if case.style != "cs231n":
            return None
        return tuple(a.copy() for a in case.inputs.values())

    def reference(self, case):
        x, w, b = case.inputs.values()
        if case.style == "cs231n":
            return ops.linear_forward(x.reshape(len(x), -1), np.ascontiguousarray(w.T), b)
        return ops.linear_forward(x, w, b)

    def reference_backward(self, case, cache, mode):
        dx, dw, db = ops.linear_backward(case.dout, cache)
        if case.style == "cs231n":
            return dx.reshape(case.inputs["x"].shape), dw.T, db
        return dx, dw, db

    def why_backward(self, rules, mode):
        return ("dx = dout @ w.T reshaped to x's shape, dw = x.reshape(N, D).T @ dout, db = dout.sum(axis=0) "
                "(CS231n's affine; with PyTorch's layout dx = dout @ w and dw = dout.T @ x).")

    def hints(self, direction, case, got, want, rules, mode):
        if direction == "backward" and got[0] is not None and np.shape(got[0]) != want[0].shape \
                and np.size(got[0]) == want[0].size:
            return ["dx must have x's shape: reshape it back (dx.reshape(x.shape))."]
        return []


# ------------------------------------------------------------------------ batch normalization

class BatchNorm(Spec):
    family, grads = "batchnorm", ("dx", "dgamma", "dbeta")
    draw_case = staticmethod(cases.batchnorm)
    why_forward = ("inference-time batch normalization with fixed statistics: out[n, c, i, j] = "
                   "(x[n, c, i, j] - mean[c]) / sqrt(var[c] + eps) * gamma[c] + beta[c], eps = 1e-5.")
    forward_properties = (SHAPE, Property("values", "plain values", values="distinct"), IN_PLACE, DTYPE)
    backward_properties = forward_properties

    def reference(self, case):
        return ops.batchnorm2d_forward(*case.inputs.values())

    def reference_backward(self, case, cache, mode):
        return ops.batchnorm2d_backward(case.dout, cache)

    def why_backward(self, rules, mode):
        return ("dx = gamma[c] / sqrt(var[c] + eps) * dout; dgamma[c] = sum over n, i, j of dout * (x - mean[c]) / "
                "sqrt(var[c] + eps); dbeta[c] = sum over n, i, j of dout.")


SPECS = {"conv": Conv, "maxpool": MaxPool, "avgpool": AvgPool, "relu": ReLU, "linear": Linear,
         "batchnorm": BatchNorm}
