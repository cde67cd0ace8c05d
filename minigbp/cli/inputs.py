"""What the commands read: models, weights, images and the output folder, each checked
before any work is done or any file is written, with one-line errors naming the thing."""

import argparse
import os
from collections import namedtuple

import numpy as np

__all__ = ["load_model", "read_input", "Input", "unique_stems", "output_folder", "existing_file",
           "count", "positive"]

Input = namedtuple("Input", "spec stem x note size colour")
Input.__doc__ = """One IMAGE argument, read and preprocessed: ``x`` (1, C, H, W) float32; ``note``
a remark for the prediction line (a shipped digit's label) or None; ``size`` the source
image's ``(height, width)``; ``colour`` whether its channels differ anywhere."""


def count(text):
    """argparse type: a whole number >= 0."""
    return _whole(text, 0, "a whole number >= 0")


def positive(text):
    """argparse type: a whole number >= 1."""
    return _whole(text, 1, "a positive whole number")


def _whole(text, least, what):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if n < least:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return n


def existing_file(path, option):
    """``path`` if it names a readable file; a ValueError naming ``option`` otherwise."""
    if not os.path.exists(path):
        raise ValueError(f"{option} {path}: no such file")
    if os.path.isdir(path):
        raise ValueError(f"{option} {path}: is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{option} {path}: not readable (permission denied)")
    return path


def output_folder(path):
    """Check that ``--out`` can be a folder (it is one, or can be created); creates nothing."""
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ValueError(f"--out {path}: exists and is not a folder")
        if not os.access(path, os.W_OK):
            raise ValueError(f"--out {path}: folder is not writable")
        return path
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise ValueError(f"--out {path}: cannot be created ({parent} is not a writable folder)")
    return path


def load_model(name, weights=None):
    """``(model, default preprocessing)`` for ``--model``/``--weights``.

    The weights file is read (and checked) before a zoo architecture is built.
    """
    from ..io import zoo
    from ..io.weights import load, load_weights

    if name == "digits":
        if weights:
            raise ValueError("--weights does not apply to the shipped digits model")
        return zoo.digits(), "digits"
    if weights:
        existing_file(weights, "--weights")
    if name in zoo.ARCHITECTURES:
        if not weights:
            raise ValueError(f"--model {name} needs --weights FILE (e.g. torchvision's checkpoint); "
                             f"minigbp never downloads weights")
        from ..io.keras import is_keras_file, load_keras_vgg

        if is_keras_file(weights):
            if name not in ("vgg16", "vgg19"):
                raise ValueError(f"--weights {weights}: Keras files convert for vgg16 and vgg19 only, "
                                 f"not {name}")
            return zoo.build(name, load_keras_vgg(weights).state_dict), "caffe"
        return zoo.build(name, load_weights(weights)), "imagenet"
    if os.path.exists(name):
        from ..io.keras_model import is_keras_archive, load_keras_model

        existing_file(name, "--model")
        model = load_keras_model(name) if is_keras_archive(name) else load(name)
        if weights:
            model.load_state_dict(load_weights(weights))
        return model, None  # a model file does not record its preprocessing: --preprocess decides
    raise ValueError(f"--model {name!r}: not digits, not one of {', '.join(zoo.ARCHITECTURES)}, and no such file")


def read_input(spec, preprocessing):
    """The :class:`Input` for one IMAGE argument: a file, or ``digits:N``."""
    from ..io.image import load_image

    if spec.startswith("digits:"):
        from ..io import zoo

        images, labels = zoo.digits_test_data()
        try:
            i = int(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"{spec}: expected digits:N with N an integer") from None
        if not 0 <= i < len(images):
            raise ValueError(f"{spec}: the shipped test split has {len(images)} digits (0..{len(images) - 1})")
        if preprocessing.name != "digits":
            raise ValueError(f"{spec}: shipped digits go with the digits model and preprocessing")
        return Input(spec, f"digits-{i}", zoo.digits_preprocess(images[i:i + 1]), f"label {labels[i]}",
                     (8, 8), False)
    image = load_image(spec)
    try:
        x = preprocessing.preprocess(image)
    except ValueError as e:
        raise ValueError(f"{spec}: {e}") from None
    colour = bool(np.any(image.max(axis=2) != image.min(axis=2)))
    return Input(spec, os.path.splitext(os.path.basename(spec))[0], x, None, image.shape[:2], colour)


def unique_stems(inputs):
    """One output name stem per input, all different.

    A file's stem is its name without extension; where two inputs share it, the folder
    holding each is put in front (``a/x.png``, ``b/x.png`` -> ``a_x``, ``b_x``), and a
    name that still repeats (the same file twice) gets ``-2``, ``-3``, ...
    """
    stems = [i.stem for i in inputs]
    named = []
    for i in inputs:
        parent = os.path.basename(os.path.dirname(os.path.abspath(i.spec)))
        clash = stems.count(i.stem) > 1 and not i.spec.startswith("digits:")
        named.append(f"{parent}_{i.stem}" if clash and parent else i.stem)
    taken, out = set(), []
    for stem in named:
        unique, n = stem, 1
        while unique in taken:
            n += 1
            unique = f"{stem}-{n}"
        taken.add(unique)
        out.append(unique)
    return out
