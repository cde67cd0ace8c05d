"""Getting models and images in and out: checkpoints (``weights``), PyTorch and Keras models
(``pytorch``, ``keras_model``; ``keras`` for Keras VGG weight files), torchvision's architectures (``zoo``), images and their
preprocessings (``image``), and the ``minigbp convert`` conversion (``convert``).

Nothing here is needed to understand the backward pass: these modules use the core
(:mod:`minigbp.model`, :mod:`minigbp.layers`) and the core never imports them.
"""


class ConversionError(ValueError):
    """A model, layer or call that minigbp cannot represent (the message names it)."""
