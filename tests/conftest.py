"""Hypothesis profiles: ``dev`` (default, random), ``ci`` (derandomized, used when CI is set);
torchvision made importable beside the CPU torch build."""

import importlib.util
import os
import pathlib
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
    """Import torchvision through ``examples/torchvision_compat.py`` (its compiled operators were
    built for another torch build); nothing when torch or torchvision is not installed."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("torchvision") is None:
        return
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "torchvision_compat.py"
    spec = importlib.util.spec_from_file_location("torchvision_compat", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.import_torchvision()


_importable_torchvision()
