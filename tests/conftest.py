"""Hypothesis profiles: ``dev`` (default, random), ``ci`` (derandomized, used when CI is set);
torchvision made importable beside the CPU torch build."""

import os
import sys

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile(
    "dev", max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def _importable_torchvision():
    """torchvision 0.28's compiled ops were built for another torch build, so its import fails with
    "operator torchvision::nms does not exist". The models and transforms never call those ops:
    defining the two operator schemas before the import is enough. Done only when the plain
    import fails; returns the Library that holds the definitions (it must stay alive)."""
    try:
        import torch
    except ImportError:
        return None
    try:
        import torchvision  # noqa: F401
        return None
    except ImportError:
        return None
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision  # noqa: F401
    return lib


_TORCHVISION_OPS = _importable_torchvision()
