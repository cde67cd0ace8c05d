"""Is a framework's guided-backprop / deconvnet / saliency implementation right? Ask minigbp.

* :mod:`~minigbp.verify.tracing` -- per-node traces of a backward pass (``mg.trace``, ``Trace``);
* :mod:`~minigbp.verify.recorder` -- the same recorded on a PyTorch module (``TorchRecorder``);
* :mod:`~minigbp.verify.keras_recorder` -- and on a Keras model (``KerasRecorder``);
* :mod:`~minigbp.verify.check` -- :func:`check`: which mode a function computes, with evidence;
* :mod:`~minigbp.verify.frameworks` -- what ``check`` needs from PyTorch and from Keras;
* :mod:`~minigbp.verify.testing` -- pytest helpers and checkers for students' layers.
"""

from .check import RTOL, Report, check

__all__ = ["check", "Report", "RTOL"]
