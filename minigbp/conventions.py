"""Conventions: the small choices every guided-backprop implementation hard-wires.

Libraries agree on the three modes and disagree on these; minigbp names each one
as a switch (defaults: PyTorch autograd's and Captum's behaviour on models whose
ReLUs are all ``nn.ReLU`` modules):

===================  ==========================  =============================================
switch               values                      where the rule lives
===================  ==========================  =============================================
``relu_at_zero``     "block" | "pass"            :func:`minigbp.ops.relu.relu_backward`:
                                                 forward mask ``[x > 0]`` or ``[x >= 0]``
``relu_scope``       None | glob pattern         :func:`rules_at`: ReLUs whose name does not
                                                 match are plain autograd
``functional_relu``  "mode" | "vanilla"          :func:`rules_at`: ReLUs that were function
                                                 calls (``F.relu``) follow the mode, or stay
                                                 plain autograd
``pool_ties``        "first" | "last" | "split"  :func:`minigbp.ops.pool.maxpool2d_backward`
``seed``             "one" | "value"             :func:`minigbp.targets.seed_rule`: a one-hot 1
                                                 at the target, or the target's own value
``upsample``         "bilinear" | "nearest"      :func:`minigbp.explain.gradcam`: how the
                                                 Grad-CAM map grows to the input's size
===================  ==========================  =============================================

:mod:`minigbp.presets` sets them as each major library does.

Why ``functional_relu``: libraries that implement guided backprop with hooks on
``nn.ReLU`` modules (Captum, zennit, pytorch-grad-cam) cannot see a ReLU written as
a function call in ``forward``. torchvision's DenseNet applies ``F.relu`` after
``features.norm5``; there these libraries compute the plain gradient through that one
ReLU. minigbp's default applies the mode at every ReLU; ``functional_relu="vanilla"``
reproduces the libraries (each converted ReLU records how it was written:
``ReLU(functional=True)``).
"""

from dataclasses import asdict, dataclass, replace
from fnmatch import fnmatchcase

from .ops.pool import TIES
from .ops.relu import AT_ZERO
from .targets import SEEDS

__all__ = ["Conventions", "DEFAULT", "FUNCTIONAL_RELU", "resolve", "in_scope", "follows_mode", "rules_at"]

FUNCTIONAL_RELU = ("mode", "vanilla")
UPSAMPLE = ("bilinear", "nearest")


@dataclass(frozen=True)
class Conventions:
    """One value per switch (see the module docstring); checked on creation."""

    relu_at_zero: str = "block"
    relu_scope: str = None
    pool_ties: str = "first"
    seed: str = "one"
    functional_relu: str = "mode"
    upsample: str = "bilinear"

    def __post_init__(self):
        for name, value, allowed in (("relu_at_zero", self.relu_at_zero, AT_ZERO),
                                     ("functional_relu", self.functional_relu, FUNCTIONAL_RELU),
                                     ("upsample", self.upsample, UPSAMPLE),
                                     ("pool_ties", self.pool_ties, TIES), ("seed", self.seed, SEEDS)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(allowed)}")
        if self.relu_scope is not None and (not isinstance(self.relu_scope, str) or not self.relu_scope):
            raise ValueError(f"relu_scope must be None or a non-empty glob pattern, got {self.relu_scope!r}")

    def updated(self, **switches):
        """A copy with the given switches changed; unknown switch names are a ``TypeError``."""
        unknown = set(switches) - set(asdict(self))
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {', '.join(sorted(unknown))}: not a convention "
                            f"(the conventions are {', '.join(asdict(self))})")
        return replace(self, **switches)

    def as_dict(self):
        return asdict(self)


DEFAULT = Conventions()


def resolve(preset=None, mode=None, conventions=None, switches=None, base=DEFAULT):
    """The conventions an entry point runs with: ``conventions`` (a :class:`Conventions`), or
    the preset's in ``mode`` (:mod:`minigbp.presets`), or ``base``; then the keyword
    ``switches`` on top. An unknown switch is a ``TypeError``, a bad value a ``ValueError``.
    """
    if preset is not None and conventions is not None:
        raise TypeError("give preset= or conventions=, not both (switches go on top of either)")
    if conventions is not None:
        if not isinstance(conventions, Conventions):
            raise TypeError(f"conventions must be a minigbp.Conventions, got {type(conventions).__name__}")
        rules = conventions
    elif preset is not None:
        from .presets import get_preset

        p = get_preset(preset)
        if mode is not None and mode not in p.modes:
            raise ValueError(f"preset {p.name!r} covers mode(s) {', '.join(p.modes)}, not {mode!r}: "
                             f"the library has no such method (or it is not checked here)")
        rules = p.for_mode(mode)
    else:
        rules = base
    return rules.updated(**switches) if switches else rules


def in_scope(name, scope=None):
    """Does layer ``name`` match ``relu_scope``? Always if ``scope`` is None; otherwise the
    dotted name must match the glob ``scope`` segment by segment (``fnmatch`` rules per
    segment, so ``"features.*"`` matches ``features.3`` but not ``features.block.3``)."""
    if scope is None:
        return True
    parts, patterns = name.split("."), scope.split(".")
    return len(parts) == len(patterns) and all(fnmatchcase(p, q) for p, q in zip(parts, patterns))


def follows_mode(name, layer, conventions):
    """Does the ReLU ``layer`` called ``name`` follow the mode? Inside ``relu_scope``, and,
    when ``functional_relu`` is "vanilla", only if it was an ``nn.ReLU`` module."""
    functional = getattr(layer, "functional", False)
    return in_scope(name, conventions.relu_scope) and not (functional and conventions.functional_relu == "vanilla")


def rules_at(name, layer, mode, conventions):
    """``(mode, conventions)`` that layer ``name`` runs its backward with.

    The given ones where the layer follows the mode (:func:`follows_mode`); elsewhere plain
    autograd: vanilla mode and the ``[x > 0]`` mask, whatever ``relu_at_zero`` says (other
    switches, such as ``pool_ties``, are not about ReLUs and stay).
    """
    if follows_mode(name, layer, conventions):
        return mode, conventions
    return "vanilla", conventions.updated(relu_at_zero="block")
