"""Targets: what to explain, and the seed that starts the backward pass.

Every entry point that runs a backward pass (:func:`minigbp.backprop`, :func:`minigbp.trace`,
:func:`minigbp.explain.attribute`) takes the same target forms, resolved here by
:func:`as_target` into one :class:`Target`:

==================================  ================================================================
target                              the seed, at the start layer's output ``out``
==================================  ================================================================
``3``, ``"3"``, ``"class:3"``       a one-hot 1 at ``out[:, 3]`` for every sample (at a 4-D output:
                                    every position of channel 3, i.e. the channel's sum)
``np.array([3, 1, 4])``             one such index per sample
``"top1"`` (``None``)               each sample's highest-scoring class of the model's output
``"layer:features.29"``             ones at every unit of that layer's output (its sum)
``"channel:features.28:17"``        ones at every position of channel 17 of that layer
``"neuron:features.28:17:5:6"``     a single 1: channel 17, y=5, x=6 of that layer
a float array shaped like ``out``   the seed itself
==================================  ================================================================

The default seed is a one-hot **1** at the target, not the target's value nor a softmax
probability (Captum's and most torch recipes' convention); the ``seed`` convention
(:func:`seed_rule`) weights it by the target's own value instead. ``"top:K"`` (the
command line's K explanations, one per rank) is split by :func:`parse_targets`.
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["Target", "as_target", "parse_targets", "seed_rule", "SEEDS"]

SEEDS = ("one", "value")

KINDS = ("class", "rank", "layer", "channel", "neuron", "seed")


@dataclass(frozen=True, eq=False)
class Target:
    """What to explain. ``kind``: one of :data:`KINDS`.

    ``index``: the class (int, or an int array (N,) with one class per sample) for "class",
    the 0-based rank for "rank" (0 = top-1), the channel for "channel", ``(channel, y, x)``
    for "neuron", the seed array for "seed". ``layer``: the start layer (None: the model's
    output); always given for "layer", "channel" and "neuron".
    """

    kind: str
    index: object = None
    layer: str = None

    def __eq__(self, other):
        return (isinstance(other, Target) and (self.kind, self.layer) == (other.kind, other.layer)
                and np.array_equal(np.asarray(self.index, dtype=object), np.asarray(other.index, dtype=object)))

    def describe(self):
        """A short description for titles, file names and traces: "class 3", "top-1 class", ..."""
        at = "" if self.layer is None else f" at {self.layer}"
        if self.kind == "class":
            i = np.asarray(self.index)
            return (f"class {int(i)}" if i.ndim == 0 else f"classes {i.tolist()}") + at
        if self.kind == "rank":
            return "top-1 class" if self.index == 0 else f"class ranked {self.index + 1}"
        if self.kind == "layer":
            return f"layer {self.layer}"
        if self.kind == "channel":
            return f"channel {self.index} of {self.layer}"
        if self.kind == "neuron":
            return f"neuron {self.index} of {self.layer}"
        return f"seed array {np.shape(self.index)}{at}"

    def classes(self, out):
        """The class index per sample, (N,), this target selects from the model's output ``out``
        (N, classes); None for targets that are not classes."""
        if self.kind == "class":
            return np.broadcast_to(np.asarray(self.index), (out.shape[0],)).copy()
        if self.kind == "rank":
            if out.ndim != 2 or not 0 <= self.index < out.shape[1]:
                what = f"{out.shape[1]} classes" if out.ndim == 2 else "no class axis"
                raise ValueError(f"{self.describe()} asked for, but the model output (shape {out.shape}) "
                                 f"has {what}")
            return np.argsort(-out, axis=1, kind="stable")[:, self.index]
        return None

    def seed(self, out, rule="one"):
        """The seed array, shaped like ``out`` (the start layer's output), for this target.

        ``rule="value"`` (the ``seed`` convention) weights it by ``out`` itself: the target's
        value instead of 1, as Zeiler & Fergus, iNNvestigate and zennit's examples seed. An
        explicit seed array is used as given (a copy, in ``out``'s dtype).
        """
        where = f"layer {self.layer!r}" if self.layer is not None else "the model output"
        if self.kind == "seed":
            seed = np.asarray(self.index)
            if seed.shape != out.shape:
                hint = " (class indices must be ints)" if seed.ndim <= 1 else ""
                raise ValueError(f"seed shape {seed.shape} does not match {where} shape {out.shape}{hint}")
            return seed.astype(out.dtype)  # always a copy: the caller's array is never touched
        return seed_rule(self._ones(out, where), out, rule)

    def _ones(self, out, where):
        """A seed of ones at the units this target selects (zeros elsewhere), shaped like ``out``."""
        if self.kind == "layer":
            return np.ones_like(out)
        ones = np.zeros_like(out)
        if self.kind == "neuron":
            c, y, x = self.index
            if out.ndim != 4:
                raise ValueError(f"{self.describe()}: needs a 4-D layer output, got shape {out.shape}")
            for i, size, what in ((c, out.shape[1], "channel"), (y, out.shape[2], "y"), (x, out.shape[3], "x")):
                if not 0 <= i < size:
                    raise ValueError(f"{self.describe()}: {what} {i} out of range for layer output shape {out.shape}")
            ones[:, c, y, x] = 1
            return ones
        classes = self.classes(out) if self.kind == "rank" else np.asarray(self.index)
        if out.ndim < 2:
            raise ValueError(f"class targets need an output with a class axis; {where} has shape {out.shape}")
        classes = np.broadcast_to(classes, (out.shape[0],)) if classes.ndim == 0 else classes
        if classes.shape != (out.shape[0],):
            raise ValueError(f"target indices must be one int or one per sample, shape ({out.shape[0]},); "
                             f"got shape {classes.shape} for {where} of shape {out.shape}")
        bad = (classes < 0) | (classes >= out.shape[1])
        if bad.any():
            raise ValueError(f"target {classes[bad][0]} out of range for {where} with {out.shape[1]} "
                             f"outputs along axis 1 (shape {out.shape})")
        ones[np.arange(out.shape[0]), classes] = 1  # a whole channel at a 4-D output
        return ones


def seed_rule(ones, out, rule="one"):
    """The ``seed`` convention: a seed of ones at the chosen units as it is (``"one"``),
    or weighted by the units' own values (``"value"``: ``ones * out``)."""
    if rule not in SEEDS:
        raise ValueError(f"unknown seed {rule!r}; expected one of {', '.join(SEEDS)}")
    return ones * out if rule == "value" else ones


def as_target(target, layer=None):
    """Any target form of the module docstring as one :class:`Target`.

    ``layer`` is the start layer for class and seed targets (``backprop(..., layer=...)``);
    a target that names its own layer must not name another one.
    """
    if isinstance(target, Target):
        t = target
    elif target is None:
        t = Target("rank", 0)
    elif isinstance(target, str):
        targets = parse_targets(target)
        if len(targets) != 1:
            raise ValueError(f"target {target!r} names {len(targets)} targets; explain them one at a time")
        t = targets[0]
    elif isinstance(target, bool) or isinstance(target, (np.bool_,)):
        raise TypeError(f"target must be an int, an int array, a seed array or a target string, got {target!r}")
    else:
        arr = np.asarray(target)
        if arr.dtype.kind in "iu":  # one class, or one per sample (checked against the output)
            t = Target("class", int(arr) if arr.ndim == 0 else arr.astype(np.int64))
        elif arr.dtype.kind == "f":
            t = Target("seed", arr)
        else:
            raise TypeError(f"backprop: target must be an int, an int array, a float seed array or a target "
                            f"string, got {type(target).__name__} of dtype {arr.dtype}")
    if layer is not None:
        if t.layer is not None and t.layer != layer:
            raise ValueError(f"target {t.describe()} starts at {t.layer!r}, not at layer={layer!r}")
        if t.kind == "rank":
            raise ValueError(f"a ranked class ({t.describe()}) is ranked at the model output; it cannot start "
                             f"at layer={layer!r}")
        t = Target(t.kind, t.index, layer)
    return t


def parse_targets(spec):
    """A target string as a list of :class:`Target` (several for ``"top:K"``).

    ``"top1"``, ``"top:K"``, ``"K"``, ``"class:K"``, ``"layer:NAME"``, ``"channel:NAME:C"``,
    ``"neuron:NAME:C:Y:X"``; other forms (int, array, :class:`Target`) pass through
    :func:`as_target`.
    """
    if not isinstance(spec, str):
        return [as_target(spec)]
    parts = spec.strip().split(":")
    kind, rest = parts[0], parts[1:]
    try:
        if parts == ["top1"]:
            return [Target("rank", 0)]
        if len(parts) == 1 and parts[0].isdigit():
            return [Target("class", int(parts[0]))]
        if kind == "class" and len(rest) == 1:
            return [Target("class", int(rest[0]))]
        if kind == "top" and len(rest) == 1 and int(rest[0]) >= 1:
            return [Target("rank", r) for r in range(int(rest[0]))]
        if kind == "layer" and len(rest) == 1 and rest[0]:
            return [Target("layer", None, rest[0])]
        if kind == "channel" and len(rest) == 2:
            return [Target("channel", int(rest[1]), rest[0])]
        if kind == "neuron" and len(rest) == 4:
            return [Target("neuron", (int(rest[1]), int(rest[2]), int(rest[3])), rest[0])]
    except ValueError:
        pass
    raise ValueError(f"bad target {spec!r}; expected top1, top:K, K, class:K, layer:NAME, channel:NAME:C "
                     f"or neuron:NAME:C:Y:X")
