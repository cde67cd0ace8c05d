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

The package, core first:

* the core -- ``shapes`` (every output-size formula), ``ops`` (each op naive and
  vectorized, the reference; ``ops/relu.py`` holds the three rules), ``fast`` (the convolution
  and max pooling as the reference computes them, with less data movement; the
  layers call it), ``layers``, ``model`` (``Graph``,
  ``Sequential``, the forward and backward loops, ``backprop``), ``targets`` (what to
  explain, the seed), ``conventions`` and ``presets`` (the choices libraries differ on),
  ``gradcheck``;
* its users -- ``explain`` (Grad-CAM, SmoothGrad, sanity checks, ``visualize``,
  ``projection``), ``io`` (``weights``, ``pytorch``, ``keras_model``, ``keras``, ``zoo``,
  ``image``, ``convert``), ``verify`` (``tracing``, ``recorder``, ``keras_recorder``,
  ``frameworks``, ``check``, ``testing``), ``course`` (checkers and grading of students'
  layer functions), ``cli``.
"""

from . import fast, ops, shapes
from .conventions import Conventions
from .gradcheck import check_layer, numerical_gradient, numerical_gradient_array, rel_error
from .layers import (Add, AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Cat, Conv2d, Dropout, Flatten, GlobalMaxPool2d,
                     Identity, Layer, Linear, MaxPool2d, ReLU, SamePad2d, Softmax, ZeroPad2d, manual_seed)
from .model import INPUT, Graph, LoadResult, backprop
from .sequential import Sequential
from .ops.relu import MODES
from . import presets, targets
from .io import image, zoo
from .io.pytorch import from_torch
from .io.keras_model import from_keras
from .io.weights import load, load_weights, model_from_spec, save, save_weights
from . import course, explain, verify
from .explain import visualize
from .explain.projection import projections
from .explain.receptive import receptive_field
from .explain.visualize import postprocess
from .verify import testing
from .verify.tracing import Trace, trace

__version__ = "0.1.0"

__all__ = [
    "Add", "AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm2d", "Cat", "Conv2d", "Dropout", "Flatten", "Identity",
    "GlobalMaxPool2d", "ZeroPad2d", "SamePad2d", "Layer", "Linear", "MaxPool2d", "ReLU", "Softmax", "Sequential", "Graph", "INPUT", "LoadResult", "MODES",
    "backprop", "manual_seed", "check_layer", "numerical_gradient", "numerical_gradient_array", "rel_error",
    "fast", "ops", "shapes", "targets", "model_from_spec", "load", "load_weights", "save", "save_weights", "zoo",
    "from_torch", "from_keras", "course", "explain", "image", "testing", "verify", "visualize", "Conventions", "presets", "postprocess",
    "projections", "receptive_field", "trace", "Trace",
]
