"""``import_torchvision()``: torchvision beside a CPU build of torch it was not compiled for.

torchvision 0.28's compiled operators were built for another torch build (its PyPI wheel beside
torch 2.13's CPU wheel), so a plain ``import torchvision`` fails with "operator torchvision::nms
does not exist". The models and transforms never call those operators: defining their two
schemas and importing again is enough. The examples and the test suite's conftest use this.
"""

import sys


def import_torchvision():
    """torchvision, importable whichever torch build it meets (see the module docstring)."""
    import torch

    try:
        import torchvision
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision
        torchvision._minigbp_schemas = lib  # keep the definitions alive
    return torchvision
