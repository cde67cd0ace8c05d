"""``minigbp convert``: any readable checkpoint -> minigbp's native ``.npz``.

Sources (recognised by content, not by extension):

* a PyTorch checkpoint (``.pth`` / ``.pt``), ``.safetensors`` or ``.npz``, read by
  :func:`minigbp.load_weights` (no torch needed, nothing from the file executed);
* a Keras ``.keras`` model archive (architecture and weights) of any model
  :func:`minigbp.from_keras` converts, read by :func:`minigbp.io.keras_model.load_keras_model`
  (needs h5py; no Keras), with Keras's layer names;
* a Keras VGG ``.h5`` / ``.weights.h5`` (or a VGG ``.keras`` with ``--arch``), read by
  :mod:`minigbp.io.keras` (needs h5py) and converted to torchvision's names and layouts.

The result is written with :func:`minigbp.save` (architecture included, so ``mg.load(DST)``
rebuilds the model) when ``--arch`` is given or the source is itself a saved minigbp model;
otherwise with :func:`minigbp.save_weights` (weights only) and a note saying so. With
``--arch`` every key and shape is checked against that architecture first and every
mismatch is listed at once; on any error nothing is written (the file is written to a
temporary name beside ``DST`` and renamed into place only when complete).
"""

import json
import os
import tempfile
import zipfile
from collections import namedtuple

import numpy as np

from . import zoo
from .keras_model import is_keras_archive, load_keras_model
from .weights import ARCHITECTURE_KEY, load_weights, model_from_spec, save, save_weights

__all__ = ["convert", "ConvertResult", "check_state_dict"]

ConvertResult = namedtuple("ConvertResult", ["path", "arrays", "parameters", "bytes", "architecture", "notes"])
ConvertResult.__doc__ = """What :func:`convert` wrote: ``arrays`` (count), ``parameters`` (elements),
``bytes`` (file size), ``architecture`` (``"vgg11"``, ``"saved model"`` or None for weights
only) and ``notes`` (sentences for the user)."""


def _is_keras_source(path):
    """An HDF5 file or ``.keras`` archive by content, or named like one (so that a damaged
    ``.h5`` gets the Keras reader's diagnosis rather than "not a torch checkpoint")."""
    from .keras import is_keras_file
    return is_keras_file(path) or path.lower().endswith((".h5", ".hdf5", ".keras"))


def _saved_spec(path):
    """The architecture stored by :func:`minigbp.save` in an ``.npz``, or None."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if ARCHITECTURE_KEY not in npz.files:
                return None
            return json.loads(str(npz[ARCHITECTURE_KEY]))
    except (OSError, ValueError, zipfile.BadZipFile):  # not an npz (a torch zip, safetensors)
        return None


def check_state_dict(state_dict, model, what="the checkpoint", against="the model"):
    """Every problem loading ``state_dict`` into ``model`` would meet, as sentences
    (:meth:`minigbp.Graph.state_dict_problems`; an empty list means it fits)."""
    return model.state_dict_problems(state_dict, strict=True, what=what, against=against)


def _read_source(src, flatten_hw):
    """``(state_dict, spec or None, inferred arch or None, notes)``."""
    if _is_keras_source(src):
        from .keras import load_keras_vgg
        r = load_keras_vgg(src, flatten_hw=flatten_hw)
        return r.state_dict, None, r.arch, [f"Keras {r.arch} converted to torchvision layout "
                                            f"(HWIO -> OIHW, Dense transposed, fc1 reordered "
                                            f"channels-last -> channels-first)"] + list(r.notes)
    if flatten_hw is not None:
        raise ValueError("--flatten-hw applies to Keras files only")
    return load_weights(src), _saved_spec(src), None, []


def _zoo_model(src, arch, num_classes, state_dict):
    """The zoo's ``arch`` with the checkpoint's weights; every mismatch listed in one ValueError."""
    model = zoo.ARCHITECTURES[arch](num_classes=num_classes)
    state_dict = zoo.checkpoint_keys(arch, state_dict)
    against = f"{arch}" + (f" (num_classes={num_classes})" if num_classes != 1000 else "")
    problems = check_state_dict(state_dict, model, what=os.path.basename(src), against=against)
    if problems:
        hint = ""
        last = [k for k in model.state_dict() if k.endswith(".weight")][-1]  # the classifier's
        w = state_dict.get(last)
        if w is not None and np.ndim(w) >= 2 and np.shape(w)[0] != num_classes:
            n = np.shape(w)[0]
            hint = f"\n(the checkpoint's classifier has {n} outputs: --num-classes {n}?)"
        raise ValueError(f"{src} does not match {against}: {len(problems)} problem(s); nothing was "
                         f"written:\n  " + "\n  ".join(problems) + hint)
    model.load_state_dict(state_dict)
    return model


def _write_atomically(dst, write):
    """Run ``write(tmp_path)`` and move the result to ``dst`` only if it succeeds."""
    directory = os.path.dirname(os.path.abspath(dst))
    fd, tmp = tempfile.mkstemp(prefix=".minigbp-convert-", suffix=".npz", dir=directory)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a converted model is an ordinary file
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def convert(src, dst, arch=None, num_classes=1000, flatten_hw=None):
    """Convert the checkpoint ``src`` to minigbp's ``.npz`` at ``dst``.

    Parameters
    ----------
    src : path
        ``.pth`` / ``.pt`` / ``.safetensors`` / ``.npz`` (see :func:`minigbp.load_weights`), a
        ``.keras`` model (see :func:`minigbp.from_keras`), or a Keras VGG ``.h5`` /
        ``.weights.h5`` (see :mod:`minigbp.io.keras`).
    dst : path
        Written only if everything succeeds (via a temporary file in the same folder).
    arch : str, optional
        A name from :data:`minigbp.zoo.ARCHITECTURES`: check the weights against it and save
        the architecture with them (``mg.load(dst)`` then rebuilds the model).
    num_classes : int
        The classifier's outputs for ``arch`` (torchvision's default 1000).
    flatten_hw : (int, int), optional
        Keras only: ``(H, W)`` of the map ``fc1`` flattens, if not a square.

    Returns
    -------
    ConvertResult

    Raises
    ------
    ValueError
        The source cannot be read, or (with ``arch``) does not match: the message lists every
        missing key, unexpected key and wrong shape. Nothing is written.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if arch is not None and arch not in zoo.ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(zoo.ARCHITECTURES)}")
    folder = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(folder):
        raise ValueError(f"{dst}: cannot write there, folder {folder} does not exist")
    if os.path.isdir(dst):
        raise ValueError(f"{dst}: is a folder; give a file name such as {os.path.join(dst, 'model.npz')}")
    model = None
    if arch is None and is_keras_archive(src):
        model = load_keras_model(src)
        state_dict, spec, inferred = model.state_dict(), None, None
        notes = ["a Keras model: the minigbp model takes (N, C, H, W) inputs, x.transpose(0, 3, 1, 2) of "
                 "Keras's; nodes carry the Keras layer names"]
    else:
        state_dict, spec, inferred, notes = _read_source(src, flatten_hw)
    if not state_dict:
        raise ValueError(f"{src}: holds no arrays")

    if model is not None:
        architecture, writer = "Keras model", (lambda p: save(model, p))
    elif arch is not None:
        model = _zoo_model(src, arch, num_classes, state_dict)
        architecture, writer = arch, (lambda p: save(model, p))
    elif spec is not None:
        try:
            model = model_from_spec(spec)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{src}: bad architecture: {e}") from e
        model.load_state_dict(state_dict)
        architecture, writer = "saved model", (lambda p: save(model, p))
    else:
        architecture, writer = None, (lambda p: save_weights(state_dict, p))
        suggestion = f" (this looks like {inferred}: add --arch {inferred})" if inferred else ""
        notes.append(f"weights only, no architecture{suggestion}; load with "
                     f"model.load_state_dict(minigbp.load_weights({os.path.basename(dst)!r}))")

    _write_atomically(dst, writer)
    arrays = state_dict if architecture is None else model.state_dict()
    return ConvertResult(dst, len(arrays), int(sum(np.size(a) for a in arrays.values())),
                         os.path.getsize(dst), architecture, notes)
