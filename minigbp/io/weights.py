"""Read model weights without torch; write them as ``.npz``.

:func:`load_weights` reads three formats and tells them apart by their first bytes,
not by the file's extension:

* a **PyTorch checkpoint** (``.pth`` / ``.pt``, what ``torch.save`` writes since torch 1.6),
* a **safetensors** file (``.safetensors``),
* a NumPy **``.npz``** archive (minigbp's native format, written by :func:`save_weights`).

Every tensor comes back as a fresh, C-contiguous NumPy array with the file's dtype
(``bfloat16``, which NumPy lacks, becomes ``float32``; every bfloat16 value is exactly
representable there). Nothing is silently upcast otherwise.

PyTorch checkpoints are read by :mod:`minigbp.io.torch_checkpoint`, which explains
their anatomy and how reading them stays safe.
"""

import json
import math
import os
import struct
import zipfile

import numpy as np

from .. import layers as L
from ..model import Graph
from ..sequential import Sequential
from .torch_checkpoint import (_RAW_ITEMSIZE, _FormatError, _find_torch_prefix, _int_tuple, _load_torch_zip,
                               _raw_to_array)

__all__ = ["load_weights", "save_weights", "save", "load"]

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive
# torch.save(..., _use_new_zipfile_serialization=False) starts with this pickled int.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"

_SAFETENSORS_DTYPES = {
    "F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
    "BOOL": "bool",
}


def _load_safetensors(f, size):
    """Parse a safetensors file.

    Layout: an 8-byte little-endian header length ``N``; ``N`` bytes of JSON mapping each
    tensor name to ``{"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}``
    (plus an optional ``"__metadata__"`` of strings); then the data section, which the
    offsets index (``end - begin == prod(shape) * itemsize``, little-endian, C order).
    """
    (n,) = struct.unpack("<Q", f.read(8))
    if n > size - 8:
        raise _FormatError(f"safetensors header claims {n} bytes but only {size - 8} follow "
                           f"(truncated file?)")

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise _FormatError("safetensors header repeats a key")
        return dict(pairs)

    try:
        header = json.loads(f.read(n).decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _FormatError(f"safetensors header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise _FormatError("safetensors header is not a JSON object")
    data_start, data_len = 8 + n, size - 8 - n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict):
                raise _FormatError("safetensors __metadata__ is not an object")
            continue
        if not (isinstance(info, dict) and {"dtype", "shape", "data_offsets"} <= set(info)):
            raise _FormatError(f"tensor {name!r}: header entry needs dtype, shape, data_offsets")
        kind = _SAFETENSORS_DTYPES.get(info["dtype"])
        if kind is None:
            raise _FormatError(f"tensor {name!r}: unsupported dtype {info['dtype']!r} "
                               f"(supported: {', '.join(_SAFETENSORS_DTYPES)})")
        shape = _int_tuple(info["shape"], f"tensor {name!r}: shape")
        offsets = _int_tuple(info["data_offsets"], f"tensor {name!r}: data_offsets")
        if len(offsets) != 2:
            raise _FormatError(f"tensor {name!r}: data_offsets must be [begin, end]")
        begin, end = offsets
        if not begin <= end <= data_len:
            raise _FormatError(f"tensor {name!r}: data_offsets [{begin}, {end}] lie outside "
                               f"the data section of {data_len} bytes")
        nbytes = math.prod(shape) * _RAW_ITEMSIZE[kind]
        if end - begin != nbytes:
            raise _FormatError(f"tensor {name!r}: data_offsets span {end - begin} bytes but "
                               f"shape {list(shape)} of {info['dtype']} needs {nbytes}")
        buf = bytearray(nbytes)
        f.seek(data_start + begin)
        if f.readinto(buf) != nbytes:
            raise _FormatError(f"tensor {name!r}: file ends inside its data")
        out[name] = _raw_to_array(buf, kind, "little", f"tensor {name!r}").reshape(shape)
    return out


ARCHITECTURE_KEY = "__architecture__"  # JSON of the model's spec() in files written by save()


def _load_npz(path):
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files if key != ARCHITECTURE_KEY}


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------

def load_weights(path):
    """Read a state dict from a torch checkpoint, a safetensors file or an ``.npz``.

    The format is recognised from the content: a zip archive holding ``<prefix>/data.pkl``
    is a torch checkpoint, a zip of ``.npy`` members is an ``.npz``, and 8 length bytes
    followed by ``{`` is safetensors. torch is never imported.

    Parameters
    ----------
    path : str or os.PathLike
        The file to read.

    Returns
    -------
    dict[str, numpy.ndarray]
        Tensor name -> fresh C-contiguous array, in the order the file lists them.
        dtypes are kept (float16, float32, float64, int8/16/32/64, uint8, bool),
        except bfloat16, which becomes float32 (exactly). A checkpoint that wraps its
        state dict as ``{"state_dict": sd, ...}`` or ``{"model": sd, ...}`` yields ``sd``;
        the wrapper's other entries (epoch, optimizer, ...) are ignored.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file is empty, truncated, corrupt, in no supported format, or its pickle
        names a global outside the allowlist (e.g. ``posix.system``); the message
        starts with the file name and says what is wrong.

    Loading a torch checkpoint runs no code from the file (:mod:`minigbp.io.torch_checkpoint`);
    full pickled models (``torch.save(model)``), TorchScript archives and the pre-1.6 torch
    format are refused with a ValueError.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:  # a missing file raises FileNotFoundError here
        size = os.fstat(f.fileno()).st_size
        head = f.read(16)
        try:
            if size == 0:
                raise _FormatError("the file is empty (0 bytes)")
            if head[:4] in _ZIP_MAGICS:
                return _load_zip(path, f)
            if head.startswith(_LEGACY_TORCH_MAGIC):
                raise _FormatError("legacy torch format (torch < 1.6 or "
                                   "_use_new_zipfile_serialization=False) is not supported; "
                                   "re-save it with a current torch.save")
            if size >= 10 and head[8:9] == b"{":
                f.seek(0)
                return _load_safetensors(f, size)
            raise _FormatError(f"not a recognised weights file (a torch .pth/.pt zip "
                               f"checkpoint, .safetensors or .npz); it starts with {head!r}")
        except _FormatError as exc:
            raise ValueError(f"{path}: {exc}") from None
        except MemoryError:
            raise
        except Exception as exc:  # zipfile, pickle, numpy, struct errors from a corrupt file
            raise ValueError(f"{path}: corrupt or truncated weights file "
                             f"({type(exc).__name__}: {exc})") from exc


def _load_zip(path, f):
    """A zip archive: a torch checkpoint if it holds ``<prefix>/data.pkl``, else an npz."""
    f.seek(0)
    with zipfile.ZipFile(f) as zf:
        names = zf.namelist()
        prefix = _find_torch_prefix(names)
        if prefix is not None:
            return _load_torch_zip(zf, prefix)
        bad = [n for n in names if not n.endswith(".npy")]
        if bad:
            raise _FormatError(f"zip archive is neither a torch checkpoint (no "
                               f"<prefix>/data.pkl) nor an .npz (member {bad[0]!r})")
    return _load_npz(path)


def save_weights(state_dict, path):
    """Write a state dict to ``path`` as an ``.npz`` archive (``np.savez``, no pickle).

    Parameters
    ----------
    state_dict : Mapping[str, array_like]
        Tensor name -> array; names keep their order. Object arrays are refused.
    path : str or os.PathLike
        Where to write. Written exactly there: no ``.npz`` suffix is appended.

    Raises
    ------
    TypeError
        A key is not a string.
    ValueError
        A value is an object array, or a key is ``"file"`` / ``"allow_pickle"``
        (names ``np.savez`` reserves for its own arguments).

    Examples
    --------
    >>> save_weights(model.state_dict(), "net.npz")          # doctest: +SKIP
    >>> load_weights("net.npz").keys() == model.state_dict().keys()   # doctest: +SKIP
    True
    """
    arrays = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"save_weights: key {key!r} is not a string")
        if key in ("file", "allow_pickle"):
            raise ValueError(f"save_weights: key {key!r} collides with an np.savez argument")
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise ValueError(f"save_weights: {key!r} is an object array; only numeric and "
                             f"bool arrays can be saved without pickle")
        arrays[key] = array
    with open(os.fspath(path), "wb") as f:
        np.savez(f, allow_pickle=False, **arrays)


def save(model, path):
    """Save a model, architecture and weights, to one ``.npz`` file.

    The arrays are stored under their state-dict names; the architecture
    (:meth:`minigbp.Graph.spec` / :meth:`minigbp.Sequential.spec`) is stored as JSON text under
    ``"__architecture__"``. :func:`load` rebuilds the model with one call, and
    :func:`load_weights` on the same file returns just the arrays.
    """
    arrays = dict(model.state_dict())
    arrays[ARCHITECTURE_KEY] = np.array(json.dumps(model.spec()))
    save_weights(arrays, path)


def model_from_spec(spec):
    """Rebuild a model (fresh parameters) from :meth:`Graph.spec` / :meth:`Sequential.spec` output."""

    kinds = {cls.__name__: cls for cls in (L.Conv2d, L.ReLU, L.MaxPool2d, L.AvgPool2d, L.AdaptiveAvgPool2d,
                                           L.Linear, L.Flatten, L.Dropout, L.Softmax, L.BatchNorm2d, L.Add,
                                           L.Cat, L.Identity, L.GlobalMaxPool2d, L.ZeroPad2d, L.SamePad2d)}
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"model spec: expected a dict with a 'type', got {spec!r:.80}")
    if spec["type"] == "Sequential":
        return Sequential(**{name: model_from_spec(child) for name, child in spec.get("children", [])})
    if spec["type"] == "Graph":
        graph, layers = Graph(), {}
        for name, layer_spec, inputs in spec.get("nodes", []):
            if "same_as" in layer_spec:
                if layer_spec["same_as"] not in layers:
                    raise ValueError(f"model spec: node {name!r} repeats unknown node {layer_spec['same_as']!r}")
                layer = layers[layer_spec["same_as"]]
            else:
                layer = layers[name] = model_from_spec(layer_spec)
            base = name.rsplit("@", 1)[0] if "same_as" in layer_spec else name
            graph.call(base, layer, *inputs)
        return graph
    if spec["type"] not in kinds:
        raise ValueError(f"model spec: unknown layer type {spec['type']!r}; known: {', '.join(kinds)}")
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.get("config", {}).items()}
    return kinds[spec["type"]](**config)


def load(path):
    """Rebuild a model written by :func:`save`: ``model = mg.load("digits.npz")``.

    Any problem with the stored architecture or with the arrays it expects is a
    ``ValueError`` naming the file.
    """

    path = os.fspath(path)
    weights = load_weights(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if ARCHITECTURE_KEY not in npz.files:
                raise ValueError(f"{path}: holds weights but no architecture; build the model "
                                 f"(e.g. from minigbp.zoo) and call load_state_dict(load_weights(path))")
            text = npz[ARCHITECTURE_KEY]
        if text.dtype.kind != "U" or text.ndim != 0:
            raise ValueError(f"{ARCHITECTURE_KEY} must be a JSON string, got a {text.dtype} array of shape "
                             f"{text.shape}")
        try:
            model = model_from_spec(json.loads(str(text)))
        except (ValueError, TypeError, AttributeError, KeyError) as e:
            raise ValueError(f"bad architecture: {e}") from e
        if not isinstance(model, Graph):
            raise ValueError("bad architecture: the top level must be a Sequential or a Graph")
        model.load_state_dict(weights)
    except ValueError as e:
        message = str(e)
        raise ValueError(message if message.startswith(path) else f"{path}: {message}") from e
    return model
