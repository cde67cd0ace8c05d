"""minigbp: a pure-NumPy CNN whose backward pass runs in three modes.

* ``vanilla``   -- the gradient (Simonyan et al. 2013)
* ``deconvnet`` -- Zeiler & Fergus 2013
* ``guided``    -- guided backpropagation (Springenberg et al. 2014)

>>> import numpy as np, minigbp as mg
>>> model = mg.Sequential(mg.Conv2d(3, 4, 3, padding=1), mg.ReLU(), mg.MaxPool2d(2),
...                       mg.Flatten(), mg.Linear(4 * 4 * 4, 10))
>>> x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
>>> mg.backprop(model, x, target=3, mode="guided").shape
(2, 3, 8, 8)
"""

from . import ops, shapes
from .gradcheck import check_layer, numerical_gradient, numerical_gradient_array, rel_error
from .conventions import Conventions
from .layers import (Add, AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Cat, Conv2d, Dropout, Flatten, Identity,
                     Layer, Linear, MaxPool2d, ReLU, Softmax, manual_seed)
from .model import INPUT, Graph, LoadResult, Sequential, backprop, model_from_spec
from .ops.relu import MODES
from .weights import load, load_weights, save, save_weights
from .convert_torch import from_torch
from . import explain, image, presets, testing, verify, visualize, zoo  # noqa: E402  (need the names above)
from .visualize import postprocess
from .projections import projections, receptive_field
from .trace import Trace, trace

__version__ = "0.1.0"

__all__ = [
    "AdaptiveAvgPool2d", "AvgPool2d", "Conv2d", "Dropout", "Flatten", "Layer", "Linear",
    "MaxPool2d", "ReLU", "Sequential", "Graph", "INPUT", "BatchNorm2d", "Add", "Cat", "Identity", "LoadResult", "MODES", "backprop", "manual_seed",
    "check_layer", "numerical_gradient", "numerical_gradient_array", "rel_error", "ops", "shapes",
    "model_from_spec", "load", "load_weights", "save", "save_weights", "zoo", "from_torch",
    "explain", "image", "testing", "verify", "visualize", "Softmax", "Conventions", "presets",
    "postprocess", "projections", "receptive_field", "trace", "Trace",
]
