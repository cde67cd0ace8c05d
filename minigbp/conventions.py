"""Conventions: the small choices every guided-backprop implementation hard-wires.

Libraries agree on the three modes and disagree on these; minigbp names each one
as a switch (defaults: PyTorch autograd's and Captum's behaviour):

==================  ==========================  =============================================
switch              values                      where the rule lives
==================  ==========================  =============================================
``relu_at_zero``    "block" | "pass"            :func:`minigbp.ops.relu.relu_backward`:
                                                forward mask ``[x > 0]`` or ``[x >= 0]``
``relu_scope``      None | glob pattern         :func:`minigbp.ops.relu.rules_at`: ReLUs whose
                                                name does not match are plain autograd
``pool_ties``       "first" | "last" | "split"  :func:`minigbp.ops.pool.maxpool2d_backward`
``seed``            "one" | "value"             :func:`minigbp.model.seed_rule`: a one-hot 1
                                                at the target, or the target's own value
==================  ==========================  =============================================

:mod:`minigbp.presets` sets them as each major library does.
"""

from dataclasses import asdict, dataclass, replace

from .ops.pool import TIES
from .ops.relu import AT_ZERO

__all__ = ["Conventions", "DEFAULT", "SEEDS"]

SEEDS = ("one", "value")


@dataclass(frozen=True)
class Conventions:
    """One value per switch (see the module docstring); checked on creation."""

    relu_at_zero: str = "block"
    relu_scope: str = None
    pool_ties: str = "first"
    seed: str = "one"

    def __post_init__(self):
        for name, value, allowed in (("relu_at_zero", self.relu_at_zero, AT_ZERO),
                                     ("pool_ties", self.pool_ties, TIES), ("seed", self.seed, SEEDS)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(allowed)}")
        if self.relu_scope is not None and (not isinstance(self.relu_scope, str) or not self.relu_scope):
            raise ValueError(f"relu_scope must be None or a non-empty glob pattern, got {self.relu_scope!r}")

    def updated(self, **switches):
        """A copy with the given switches changed; unknown switch names are a ``TypeError``."""
        unknown = set(switches) - set(asdict(self))
        if unknown:
            raise TypeError(f"unknown convention(s) {sorted(unknown)}; known: {', '.join(asdict(self))}")
        return replace(self, **switches)

    def as_dict(self):
        return asdict(self)


DEFAULT = Conventions()
