"""Keras VGG weights (``.h5``) in torchvision's layout.

(This module is longer than most: it reads both HDF5 layouts Keras has written -- Keras 2's
and Keras 3's -- and converts VGG16/19 to torchvision's names and layouts; the two halves
share the file's naming rules.)

Keras (``keras.applications.VGG16`` / ``VGG19``, or any model whose layers carry the
same names) stores the network differently from PyTorch, and three differences matter:

* **conv kernels are HWIO**, ``(kh, kw, in, out)``; PyTorch's are OIHW:
  ``weight = kernel.transpose(3, 2, 0, 1)``. Keras's ``Conv2D`` is a cross-correlation
  like PyTorch's, so no kernel is flipped.
* **Dense kernels are (in, out)**; PyTorch's ``Linear`` weights are (out, in): ``weight = kernel.T``.
* Keras runs **channels-last**: its ``Flatten`` turns the last feature map ``(H, W, C)`` into
  the vector index ``(h * W + w) * C + c``, while minigbp (NCHW, like PyTorch) flattens
  ``(C, H, W)`` to ``(c * H + h) * W + w``. The first Dense after ``Flatten`` (``fc1``)
  must therefore have its input axis permuted, not just transposed::

      weight = kernel.reshape(H, W, C, out).transpose(3, 2, 0, 1).reshape(out, C * H * W)

  Transposing alone gives a model that runs, has the right shapes, and computes
  nonsense.

Layer names map as follows (``vgg16``; ``vgg19`` has a fourth conv in blocks 3-5)::

    block1_conv1 -> features.0    block3_conv1 -> features.10   block5_conv1 -> features.24
    block1_conv2 -> features.2    ...                           ...
    block2_conv1 -> features.5    block4_conv1 -> features.17   block5_conv3 -> features.28
    fc1 -> classifier.0           fc2 -> classifier.3           predictions -> classifier.6

A file saved with ``include_top=False`` has no ``fc1``/``fc2``/``predictions``: only the
features are converted and :attr:`KerasVGG.missing_keys` lists the classifier's keys.

**Logits, not probabilities.** Keras's ``VGG16(include_top=True)`` ends in a softmax
(``predictions`` has ``activation="softmax"``); the minigbp model ends at the last
``Linear`` and returns the logits. ``softmax(minigbp_logits)`` equals Keras's output,
and :func:`minigbp.backprop` seeds a 1 at the *logit*, not at the probability.

**Preprocessing.** Keras's VGG weights expect :func:`keras_vgg_preprocess` (Caffe style:
BGR channel order, ImageNet means subtracted, no scaling), not torchvision's RGB
``(x / 255 - mean) / std``. Feeding torchvision-style inputs to converted Keras weights
(or the reverse) gives plausible-looking but wrong predictions.

File layouts read (the file's own structure decides, not its name)
-------------------------------------------------------------------
``h5py`` is needed (``pip install "minigbp[keras]"``); Keras and TensorFlow are not.

* **Keras 2 / tf.keras HDF5** (``model.save_weights("w.h5")``, the files
  ``keras.applications`` downloads, and Keras 3's legacy ``model.save("m.h5")``): the root
  (or its ``model_weights`` group, for a whole saved model) has the attribute
  ``layer_names``; each layer's group has ``weight_names``, paths of the datasets relative
  to that group, in the order Keras loads them (kernel, then bias)::

      /  attrs: layer_names = ["input_1", "block1_conv1", ..., "predictions"]
      /block1_conv1  attrs: weight_names = ["block1_conv1/kernel:0", "block1_conv1/bias:0"]
      /block1_conv1/block1_conv1/kernel:0   (3, 3, 3, 64)
      /block1_conv1/block1_conv1/bias:0     (64,)

  (The ``keras.applications`` files name them ``block1_conv1_W_1:0`` / ``..._b_1:0`` directly
  in the layer's group; Keras 3's legacy files drop the ``:0``.) Attributes too large for
  one HDF5 header are split by Keras into ``layer_names0``, ``layer_names1``, ...: read too.
* **Keras 3 ``.weights.h5``** (``model.save_weights("w.weights.h5")``, also tf.keras 2.13+'s
  new format, and the ``model.weights.h5`` inside a ``.keras`` zip archive)::

      /layers/conv2d/vars      attrs: name = "block1_conv1"  (recent Keras 3 only)
      /layers/conv2d/vars/0    (3, 3, 3, 64)   kernel
      /layers/conv2d/vars/1    (64,)           bias
      /layers/conv2d_1/vars/0  ...             (tf.keras 2.13-2.15: /_layer_checkpoint_dependencies/...)

  Groups are keyed by *class* (``conv2d``, ``conv2d_1``, ..., ``dense``, ``dense_1``), in
  the model's layer order. When no ``name`` attribute is stored (tf.keras, early Keras 3),
  the convolutions and Dense layers are assigned to VGG's layers in that order, and
  :attr:`KerasVGG.notes` says so.

Theano-ordered files (``*_th_dim_ordering_th_kernels.h5``) are refused: their kernels are
OIHW and flipped.

Examples
--------
>>> import minigbp as mg
>>> from minigbp.io.keras import load_keras_vgg, keras_vgg_preprocess
>>> conv = load_keras_vgg("vgg16_weights_tf_dim_ordering_tf_kernels.h5")   # doctest: +SKIP
>>> model = mg.zoo.vgg16(conv.state_dict)                                    # doctest: +SKIP
>>> x = keras_vgg_preprocess(images_rgb_uint8)          # (N, 224, 224, 3) -> (N, 3, 224, 224)  # doctest: +SKIP
>>> logits = model(x)                                    # softmax(logits) == Keras's output  # doctest: +SKIP
"""

import io
import math
import os
import re
import zipfile
from collections import namedtuple

import numpy as np

from .torch_checkpoint import _raw_to_array

from .image import IMAGENET_BGR_MEAN, keras_vgg_deprocess, keras_vgg_preprocess  # noqa: F401 (public here)
from .zoo import VGG_CONFIGS

__all__ = ["KerasVGG", "KerasLayer", "load_keras_vgg", "read_keras_weights", "keras_vgg_to_torch",
           "keras_vgg_preprocess", "keras_vgg_deprocess", "is_keras_file", "IMAGENET_BGR_MEAN"]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_KERAS_ARCHIVE_MEMBER = "model.weights.h5"  # the weights inside a Keras 3 ".keras" zip

KerasLayer = namedtuple("KerasLayer", ["name", "where", "weights"])
KerasLayer.__doc__ = """One Keras layer with weights, as stored in a file.

``name``: the Keras layer name (``"block1_conv1"``), or None when the file does not record
it (class-keyed ``.weights.h5``); ``where``: the HDF5 path it was read from; ``weights``:
list of arrays in Keras's order and layout (kernel, then bias)."""

KerasVGG = namedtuple("KerasVGG", ["state_dict", "arch", "missing_keys", "ignored_layers", "notes"])
KerasVGG.__doc__ = """A converted Keras VGG.

``state_dict``: ``{"features.0.weight": OIHW array, ..., "classifier.6.bias": ...}`` in
torchvision's names and layouts (dtypes as stored, usually float32); ``arch``: ``"vgg11"``,
``"vgg13"``, ``"vgg16"`` or ``"vgg19"``, from the number of convolutions per block;
``missing_keys``: torchvision keys of that architecture the file does not provide (the
classifier's six for an ``include_top=False`` file); ``ignored_layers``: names (or HDF5 paths)
of layers with weights that are not VGG layers (e.g. a custom head); ``notes``: sentences
worth showing the user."""


def _h5py():
    try:
        import h5py
    except ImportError as e:
        raise ImportError('reading Keras .h5 files needs h5py: pip install "minigbp[keras]" '
                          '(or pip install h5py)') from e
    return h5py


# ---------------------------------------------------------------------------------------
# Reading the two HDF5 layouts
# ---------------------------------------------------------------------------------------

def is_keras_file(path):
    """True if ``path`` is an HDF5 file or a Keras 3 ``.keras`` archive (by content)."""
    with open(os.fspath(path), "rb") as f:
        head = f.read(8)
    if head == _HDF5_MAGIC:
        return True
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(os.fspath(path)) as zf:
                return _KERAS_ARCHIVE_MEMBER in zf.namelist()
        except zipfile.BadZipFile:
            return False
    return False


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _attr_list(group, name):
    """A list-of-strings attribute, joined from Keras's ``name0``, ``name1``, ... chunks."""
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks, i = [], 0
        while f"{name}{i}" in group.attrs:
            chunks.append(group.attrs[f"{name}{i}"])
            i += 1
        if not chunks:
            return None
    out = []
    for chunk in chunks:
        values = np.atleast_1d(np.asarray(chunk))
        if values.size and values.dtype.kind not in "OSU":
            raise ValueError(f"attribute {name!r} of {group.name!r} holds {values.dtype} values, "
                             f"not layer/weight names")
        out.extend(_text(v) for v in values.tolist())
    return out


def _dataset_array(h5py, node, where):
    if not isinstance(node, h5py.Dataset):
        raise ValueError(f"{where!r} is a {type(node).__name__}, not a dataset of weights")
    arr = np.asarray(node[()])
    if _text(node.attrs.get("dtype", "")) == "bfloat16" and arr.dtype.itemsize == 2:
        arr = _raw_to_array(arr.tobytes(), "bfloat16", "little", where).reshape(arr.shape)
    if arr.dtype.kind != "f":
        raise ValueError(f"{where!r} holds {arr.dtype} values, not floating-point weights")
    return np.ascontiguousarray(arr)


def _read_legacy(h5py, root):
    """Keras 2 layout: ``layer_names`` on ``root``, ``weight_names`` on each layer's group."""
    names = _attr_list(root, "layer_names")
    layers = []
    for lname in names:
        if lname not in root:
            raise ValueError(f"layer_names lists {lname!r} but {root.name!r} has no such group")
        group = root[lname]
        wnames = _attr_list(group, "weight_names") or []
        arrays = []
        for w in wnames:
            if w not in group:
                raise ValueError(f"layer {lname!r} lists weight {w!r} but {group.name}/{w} is missing")
            arrays.append(_dataset_array(h5py, group[w], f"{group.name}/{w}"))
        if not arrays:
            continue
        # A nested model (e.g. a VGG16 base inside a Sequential) is one "layer" whose weight
        # names carry the inner layers' names: "block1_conv1/kernel:0", "block1_conv2/...".
        prefixes = [w.rsplit("/", 1)[0] if "/" in w else None for w in wnames]
        if len(set(prefixes)) > 1 and None not in prefixes:
            inner = {}
            for p, w, arr in zip(prefixes, wnames, arrays):
                inner.setdefault(p.rsplit("/", 1)[-1], []).append(arr)
            layers += [KerasLayer(n, f"{group.name}/{n}", a) for n, a in inner.items()]
        else:
            layers.append(KerasLayer(lname, group.name, arrays))
    return layers


def _natural_key(name):
    """``conv2d_10`` after ``conv2d_9``: Keras numbers same-class layers in model order."""
    m = re.fullmatch(r"(.*?)(?:_(\d+))?", name)
    return m.group(1), int(m.group(2) or 0)


def _read_v3(h5py, root):
    """Keras 3 layout: ``layers/<class key>/vars/<i>``, nested models recursed into."""
    layers = []

    def walk(container):
        for key in sorted(container.keys(), key=_natural_key):
            node = container[key]
            if not isinstance(node, h5py.Group):
                continue
            if "vars" in node and isinstance(node["vars"], h5py.Group) and len(node["vars"]):
                v = node["vars"]
                n = len(v)
                missing = [str(i) for i in range(n) if str(i) not in v]
                if missing:
                    raise ValueError(f"{v.name!r} holds {sorted(v.keys())}, expected datasets 0..{n - 1}")
                arrays = [_dataset_array(h5py, v[str(i)], f"{v.name}/{i}") for i in range(n)]
                name = v.attrs.get("name")
                layers.append(KerasLayer(None if name is None else _text(name), node.name, arrays))
            for sub in ("layers", "_layer_checkpoint_dependencies"):
                if sub in node and isinstance(node[sub], h5py.Group):
                    walk(node[sub])

    for top in ("layers", "_layer_checkpoint_dependencies"):
        if top in root:
            walk(root[top])
            break
    return layers


def _read_root(h5py, root):
    for candidate in (root, root.get("model_weights")):
        if candidate is not None and isinstance(candidate, h5py.Group) and (
                "layer_names" in candidate.attrs or "layer_names0" in candidate.attrs):
            return _read_legacy(h5py, candidate)
    if "layers" in root or "_layer_checkpoint_dependencies" in root:
        return _read_v3(h5py, root)
    raise ValueError(f"not a Keras weights file: no 'layer_names' attribute (Keras 2 .h5) and no "
                     f"'layers' group (Keras 3 .weights.h5); the root holds {sorted(root.keys())[:10]}")


def read_keras_weights(path):
    """Every layer with weights in a Keras weights file, in the model's order.

    Parameters
    ----------
    path : str or os.PathLike
        A Keras 2 / tf.keras ``.h5`` (weights or whole model), a Keras 3 ``.weights.h5``, or a
        Keras 3 ``.keras`` archive. See the module docstring for the layouts.

    Returns
    -------
    list of KerasLayer
        ``(name, where, weights)``; ``weights`` in Keras's layouts (HWIO kernels, (in, out) Dense
        kernels) and stored dtypes (bfloat16 becomes float32).

    Raises
    ------
    ImportError
        h5py is not installed.
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Not an HDF5 file / ``.keras`` archive, or not laid out as Keras writes weights; the
        message starts with the file name.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:  # FileNotFoundError before h5py is needed
        head = f.read(8)
    h5py = _h5py()
    try:
        if head[:4] == b"PK\x03\x04":
            try:
                with zipfile.ZipFile(path) as zf:
                    if _KERAS_ARCHIVE_MEMBER not in zf.namelist():
                        raise ValueError(f"zip archive without {_KERAS_ARCHIVE_MEMBER!r}: not a "
                                         f".keras model")
                    blob = io.BytesIO(zf.read(_KERAS_ARCHIVE_MEMBER))
            except zipfile.BadZipFile as e:
                raise ValueError(f"corrupt zip archive ({e})") from e
            with h5py.File(blob, "r") as root:
                return _read_root(h5py, root)
        if head != _HDF5_MAGIC:
            raise ValueError(f"not an HDF5 file (it starts with {head!r}, not the HDF5 signature)")
        try:
            root = h5py.File(path, "r")
        except OSError as e:
            raise ValueError(f"corrupt or truncated HDF5 file ({e})") from e
        with root:
            return _read_root(h5py, root)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    except (OSError, KeyError, RuntimeError) as e:  # h5py errors from a damaged file
        raise ValueError(f"{path}: corrupt or truncated HDF5 file ({type(e).__name__}: {e})") from e


# ---------------------------------------------------------------------------------------
# Keras names and layouts -> torchvision names and layouts
# ---------------------------------------------------------------------------------------

def _blocks(cfg):
    """Convolutions per block of a torchvision VGG config: vgg16 -> (2, 2, 3, 3, 3)."""
    counts, n = [], 0
    for v in cfg:
        if v == "M":
            counts.append(n)
            n = 0
        else:
            n += 1
    return tuple(counts)


_ARCH_BY_BLOCKS = {_blocks(cfg): name for name, cfg in VGG_CONFIGS.items()}
_DENSE = {"fc1": 0, "fc2": 3, "predictions": 6}
_CONV_NAME = re.compile(r"block(\d+)_conv(\d+)")


def _feature_indices(blocks):
    """torchvision's ``features`` index of each conv: conv, ReLU per conv; a pool per block."""
    out, i = [], 0
    for n in blocks:
        for _ in range(n):
            out.append(i)
            i += 2
        i += 1
    return out


def _expected_keys(blocks):
    keys = [f"features.{i}.{p}" for i in _feature_indices(blocks) for p in ("weight", "bias")]
    return keys + [f"classifier.{i}.{p}" for i in _DENSE.values() for p in ("weight", "bias")]


def _kernel_bias(layer, ndim, what):
    w = layer.weights
    if len(w) != 2:
        raise ValueError(f"{what} {layer.name or layer.where!r} has {len(w)} weight arrays; expected "
                         f"a kernel and a bias (torchvision's VGG layers all have biases)")
    kernel, bias = w
    if kernel.ndim != ndim or bias.ndim != 1 or kernel.shape[-1] != bias.shape[0]:
        hint = ""
        if ndim == 4 and kernel.ndim == 4 and kernel.shape[0] == bias.shape[0]:
            hint = (" (this looks like Theano kernel ordering, a *_th_dim_ordering_th_kernels file; "
                    "use the tf_dim_ordering file)")
        kind = "Conv2D (kh, kw, in, out)" if ndim == 4 else "Dense (in, out)"
        raise ValueError(f"{what} {layer.name or layer.where!r}: kernel {kernel.shape} and bias "
                         f"{bias.shape} are not a Keras {kind} kernel and its bias{hint}")
    return kernel, bias


def keras_vgg_to_torch(layers, flatten_hw=None):
    """Map Keras VGG layers (from :func:`read_keras_weights`) to a torchvision state dict.

    Parameters
    ----------
    layers : list of KerasLayer (or ``(name, weights)`` pairs)
        Keras layers named ``block{b}_conv{j}``, ``fc1``, ``fc2``, ``predictions``; other
        layers are reported in ``ignored_layers``. If *no* layer has a name (class-keyed
        Keras 3 files), convolutions and Dense layers are taken in order.
    flatten_hw : (int, int), optional
        ``(H, W)`` of the last feature map, which ``fc1`` flattens. Default: inferred as a
        square (``fc1``'s inputs / channels = H * W, 7 * 7 for 224x224 inputs); give it for
        a non-square map.

    Returns
    -------
    KerasVGG

    Raises
    ------
    ValueError
        Missing or duplicated convolutions, a block structure that is none of VGG11/13/16/19,
        shapes that do not chain, or an ``fc1`` whose size does not fit ``flatten_hw``.
    """
    layers = [l if isinstance(l, KerasLayer) else KerasLayer(l[0], l[0], list(l[1])) for l in layers]
    notes = []
    if layers and all(l.name is None for l in layers):
        convs, denses, blocks, ignored = _by_order(layers)
        notes.append("the file records no layer names (class-keyed .weights.h5): convolutions and "
                     "Dense layers were assigned to VGG's layers in the file's order")
    else:
        convs, denses, blocks, ignored = _by_name(layers)
    arch = _ARCH_BY_BLOCKS.get(blocks)
    if arch is None:
        known = "; ".join(f"{a}: {b}" for b, a in _ARCH_BY_BLOCKS.items())
        raise ValueError(f"convolutions per block {blocks} match no VGG ({known})")
    sd, channels = _features(convs, blocks)
    sd.update(_classifier(denses, channels, flatten_hw))
    missing = [k for k in _expected_keys(blocks) if k not in sd]
    if missing:
        notes.append(f"not in the file (include_top=False?): {', '.join(missing)}")
    if ignored:
        notes.append(f"ignored layers that are not VGG layers: {', '.join(ignored)}")
    return KerasVGG(sd, arch, missing, ignored, notes)


def _by_order(layers):
    """``(convs, denses, blocks, ignored)`` for a file without layer names: the convolutions and
    Dense layers in the file's order, the block structure from the number of convolutions."""
    conv_layers = [l for l in layers if l.weights and l.weights[0].ndim == 4]
    dense_layers = [l for l in layers if l.weights and l.weights[0].ndim == 2]
    used = {id(l) for l in conv_layers + dense_layers}
    by_count = {sum(b): b for b in _ARCH_BY_BLOCKS}
    if len(conv_layers) not in by_count:
        raise ValueError(f"the file records no layer names and holds {len(conv_layers)} convolutions; "
                         f"a VGG has {', '.join(str(n) for n in sorted(by_count))}")
    if len(dense_layers) > 3:
        raise ValueError(f"the file records no layer names and holds {len(dense_layers)} Dense "
                         f"layers; a VGG has at most 3 (fc1, fc2, predictions)")
    blocks = by_count[len(conv_layers)]
    keys = [(b, j) for b, n in enumerate(blocks, 1) for j in range(1, n + 1)]
    return (dict(zip(keys, conv_layers)), dict(zip(_DENSE, dense_layers)), blocks,
            [l.where for l in layers if id(l) not in used])


def _by_name(layers):
    """``(convs, denses, blocks, ignored)`` from the layer names ``block{b}_conv{j}``, ``fc1``, ..."""
    convs, denses, ignored = {}, {}, []
    for l in layers:
        m = _CONV_NAME.fullmatch(l.name or "")
        key = (int(m.group(1)), int(m.group(2))) if m else l.name if l.name in _DENSE else None
        if key is None:
            ignored.append(l.name or l.where)
            continue
        target = convs if m else denses
        if key in target:
            raise ValueError(f"layer {l.name!r} occurs twice ({target[key].where}, {l.where})")
        target[key] = l
    if not convs:
        names = ", ".join(repr(l.name or l.where) for l in layers[:12])
        raise ValueError(f"no VGG convolutions (block1_conv1, ...) found; layers with weights: {names}")
    blocks = []
    for b in range(1, max(b for b, _ in convs) + 1):
        js = sorted(j for bb, j in convs if bb == b)
        if js != list(range(1, len(js) + 1)) or not js:
            raise ValueError(f"block {b} has convolutions {['block%d_conv%d' % (b, j) for j in js]}; "
                             f"expected block{b}_conv1, block{b}_conv2, ... without gaps")
        blocks.append(len(js))
    return convs, denses, tuple(blocks), ignored


def _features(convs, blocks):
    """``features.N`` weights (HWIO -> OIHW) and biases, and the last convolution's channels."""
    sd, prev_out = {}, None
    for idx, (b, j) in zip(_feature_indices(blocks), sorted(convs)):
        kernel, bias = _kernel_bias(convs[(b, j)], 4, "Conv2D")
        if prev_out is not None and kernel.shape[2] != prev_out:
            raise ValueError(f"block{b}_conv{j} takes {kernel.shape[2]} input channels but the "
                             f"previous convolution gives {prev_out}")
        prev_out = kernel.shape[3]
        sd[f"features.{idx}.weight"] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))  # HWIO -> OIHW
        sd[f"features.{idx}.bias"] = bias
    return sd, prev_out


def _classifier(denses, channels, flatten_hw):
    """``classifier.N`` weights (transposed; ``fc1`` reordered from channels-last) and biases."""
    sd, prev = {}, None
    for name, idx in _DENSE.items():
        if name not in denses:
            prev = None
            continue
        kernel, bias = _kernel_bias(denses[name], 2, "Dense")
        if name == "fc1":
            weight = _fc1_channels_first(kernel, channels, flatten_hw)
        else:
            if prev is not None and kernel.shape[0] != prev:
                raise ValueError(f"{name} takes {kernel.shape[0]} inputs but the previous Dense "
                                 f"gives {prev}")
            weight = kernel.T
        prev = kernel.shape[1]
        sd[f"classifier.{idx}.weight"] = np.ascontiguousarray(weight)
        sd[f"classifier.{idx}.bias"] = bias
    return sd


def _fc1_channels_first(kernel, c, flatten_hw):
    """``fc1``'s kernel (H*W*C, out), flattened channels-last by Keras, as a torch weight
    (out, C*H*W) in minigbp's channels-first order."""
    n_in, n_out = kernel.shape
    if n_in % c:
        raise ValueError(f"fc1 has {n_in} inputs, not a multiple of the last convolution's {c} channels")
    if flatten_hw is None:
        s = math.isqrt(n_in // c)
        if s * s != n_in // c:
            raise ValueError(f"fc1 flattens {n_in // c} positions per channel, not a square "
                             f"map; pass flatten_hw=(H, W) (minigbp convert --flatten-hw HxW)")
        flatten_hw = (s, s)
    h, w = flatten_hw
    if h * w * c != n_in:
        raise ValueError(f"fc1 has {n_in} inputs but flatten_hw={tuple(flatten_hw)} with {c} "
                         f"channels gives {h * w * c}")
    return kernel.reshape(h, w, c, n_out).transpose(3, 2, 0, 1).reshape(n_out, c * h * w)


def load_keras_vgg(path, flatten_hw=None):
    """Read a Keras VGG weights file and convert it to torchvision's names and layouts.

    ``read_keras_weights`` followed by ``keras_vgg_to_torch``; errors name the file.

    Returns
    -------
    KerasVGG
        ``mg.zoo.vgg16(result.state_dict)`` (or ``mg.zoo.build(result.arch, ...)``) is then
        the Keras model, up to its final softmax (see the module docstring).

    Examples
    --------
    >>> r = load_keras_vgg("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")   # doctest: +SKIP
    >>> r.arch, r.missing_keys[:2]                                               # doctest: +SKIP
    ('vgg16', ['classifier.0.weight', 'classifier.0.bias'])
    >>> model = mg.zoo.vgg16()                                                   # doctest: +SKIP
    >>> model.load_state_dict(r.state_dict, strict=False)                        # doctest: +SKIP
    """
    layers = read_keras_weights(path)
    try:
        return keras_vgg_to_torch(layers, flatten_hw)
    except ValueError as e:
        raise ValueError(f"{os.fspath(path)}: {e}") from None


# ---------------------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------------------
