"""Read model weights without torch; write them as ``.npz``.

:func:`load_weights` reads three formats and tells them apart by their first bytes,
not by the file's extension:

* a **PyTorch checkpoint** (``.pth`` / ``.pt``, what ``torch.save`` writes since torch 1.6),
* a **safetensors** file (``.safetensors``),
* a NumPy **``.npz``** archive (minigbp's native format, written by :func:`save_weights`).

Every tensor comes back as a fresh, C-contiguous NumPy array with the file's dtype
(``bfloat16``, which NumPy lacks, becomes ``float32``; every bfloat16 value is exactly
representable there). Nothing is silently upcast otherwise.

Anatomy of a torch checkpoint
-----------------------------
``torch.save(obj, "net.pth")`` writes an uncompressed zip archive. All members sit in one
folder (``<prefix>/``, the file's stem or ``archive``)::

    net/data.pkl       the object (e.g. a state dict), pickled; tensors inside refer to
                       storages by key instead of holding their numbers
    net/data/0         raw bytes of storage "0" (e.g. 4-byte floats one after another)
    net/data/1         raw bytes of storage "1"  ...
    net/byteorder      "little" or "big": byte order of the raw bytes
    net/version        format version; other bookkeeping members are ignored

In ``data.pkl`` a tensor is the call
``torch._utils._rebuild_tensor_v2(storage, offset, shape, strides, requires_grad, hooks)``
and each ``storage`` is a *persistent id*, the tuple
``("storage", torch.FloatStorage, "0", "cpu", numel)``. The tensor's element ``[i, j, ...]``
is ``storage[offset + i*strides[0] + j*strides[1] + ...]``, so views, transposes and
several tensors sharing one storage are all described by (offset, shape, strides).

The safety promise
------------------
Unpickling runs whatever functions a pickle names: ``torch.load(..., weights_only=False)``
on a hostile file can call ``os.system``. minigbp unpickles ``data.pkl`` with
:class:`_AllowlistUnpickler`, whose ``find_class`` knows only a short allowlist of names
(the tensor/parameter rebuilders, the storage classes, the ``torch.<dtype>`` names and
``collections.OrderedDict``) and maps each to a small NumPy function written in this
module. Any other name raises ``ValueError`` before anything is called, so nothing from
the file is ever executed, and torch is never imported.
"""

import collections
import json
import math
import os
import pickle
import struct
import zipfile

import numpy as np

from .. import layers as L
from ..model import Graph, Sequential

__all__ = ["load_weights", "save_weights", "save", "load"]

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive
# torch.save(..., _use_new_zipfile_serialization=False) starts with this pickled int.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"

# Element kinds. "bfloat16" is stored as uint16 and widened to float32 on reading.
_KINDS = ("float16", "bfloat16", "float32", "float64",
          "int64", "int32", "int16", "int8", "uint8", "bool")
_RAW_ITEMSIZE = {"bfloat16": 2, **{k: np.dtype(k).itemsize for k in _KINDS if k != "bfloat16"}}

_TORCH_STORAGES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool",
}
_SAFETENSORS_DTYPES = {
    "F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
    "BOOL": "bool",
}


class _FormatError(Exception):
    """A problem with the file's contents; :func:`load_weights` prefixes the file name."""


# ---------------------------------------------------------------------------------------
# Raw bytes -> NumPy
# ---------------------------------------------------------------------------------------

def _raw_to_array(buf, kind, byteorder, what):
    """Interpret ``buf`` as a flat array of ``kind`` elements stored in ``byteorder``.

    Returns a 1-D array in native byte order. ``bfloat16`` is the top half of a float32,
    so shifting its 16 bits into the high half of a uint32 gives the float32 exactly.
    """
    size = _RAW_ITEMSIZE[kind]
    if len(buf) % size:
        raise _FormatError(f"{what} holds {len(buf)} bytes, not a whole number of "
                           f"{size}-byte {kind} elements")
    order = "<" if byteorder == "little" else ">"
    if kind == "bfloat16":
        bits = np.frombuffer(buf, dtype=np.dtype(order + "u2"))
        return (bits.astype(np.uint32) << 16).view(np.float32)
    if kind == "bool":
        return np.frombuffer(buf, dtype=np.uint8) != 0
    raw = np.frombuffer(buf, dtype=np.dtype(kind).newbyteorder(order))
    return raw.astype(np.dtype(kind), copy=False)


def _check_int(value, what, minimum=0):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _FormatError(f"{what} must be an int >= {minimum}, got {value!r}")
    return value


def _int_tuple(value, what):
    if not isinstance(value, (tuple, list)):
        raise _FormatError(f"{what} must be a tuple of ints, got {type(value).__name__}")
    return tuple(_check_int(v, what) for v in value)


# ---------------------------------------------------------------------------------------
# The allowlisted names and what they turn into
# ---------------------------------------------------------------------------------------

def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """NumPy stand-in for ``torch._utils._rebuild_tensor_v2``.

    Element ``idx`` of the tensor is ``storage[offset + sum(idx[k] * stride[k])]``
    (strides count elements). Every index is checked to lie inside the storage before
    ``as_strided`` touches memory; the result is copied into a fresh C-contiguous array.
    """
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise _FormatError("tensor rebuilt from something that is not a storage")
    offset = _check_int(storage_offset, "storage offset")
    shape = _int_tuple(size, "tensor shape")
    strides = _int_tuple(stride, "tensor strides")
    if len(shape) != len(strides):
        raise _FormatError(f"tensor shape {shape} and strides {strides} differ in length")
    if 0 in shape:
        return np.empty(shape, dtype=storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(shape, strides))
    if last >= storage.size:
        raise _FormatError(f"tensor (offset {offset}, shape {shape}, strides {strides}) "
                           f"reaches element {last} of a storage of {storage.size} elements")
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=shape, strides=[s * storage.itemsize for s in strides],
        writeable=False)
    return view.copy(order="C")


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """NumPy stand-in for ``torch._utils._rebuild_parameter``: a Parameter is its data."""
    if not isinstance(data, np.ndarray):
        raise _FormatError("parameter rebuilt from something that is not a tensor")
    return data


def _ordered_dict(*args):
    """``collections.OrderedDict()``, the container of every state dict."""
    if len(args) > 1:
        raise _FormatError("OrderedDict called with more than one argument")
    return collections.OrderedDict(*args)


class _Allowed:
    """What ``find_class`` hands out for an allowlisted name.

    Immutable (no ``__dict__``; ``__setattr__`` and ``__setstate__`` refuse), so a pickle's
    BUILD opcode cannot change it, and one set of instances can serve every load. ``kind`` is set for the
    storage classes and dtypes (which are tokens, not callables); ``fn`` for callables.
    """

    __slots__ = ("name", "kind", "fn")

    def __init__(self, name, kind=None, fn=None):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "fn", fn)

    def __setattr__(self, key, value):
        raise _FormatError(f"the pickle tries to modify {self.name}")

    def __setstate__(self, state):  # the BUILD opcode calls this
        raise _FormatError(f"the pickle tries to modify {self.name}")

    def __call__(self, *args):
        if self.fn is None:
            raise _FormatError(f"the pickle calls {self.name}, which is not callable here")
        return self.fn(*args)

    def __repr__(self):
        return self.name


def _allowlist():
    table = {
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
        "collections.OrderedDict": _ordered_dict,
    }
    allowed = {name: _Allowed(name, fn=fn) for name, fn in table.items()}
    for cls, kind in _TORCH_STORAGES.items():
        allowed[f"torch.{cls}"] = _Allowed(f"torch.{cls}", kind=kind)
    for kind in _KINDS:
        allowed[f"torch.{kind}"] = _Allowed(f"torch.{kind}", kind=kind)
    return allowed


_ALLOWED = _allowlist()
_STORAGE_NAMES = frozenset(f"torch.{cls}" for cls in _TORCH_STORAGES)


class _AllowlistUnpickler(pickle.Unpickler):
    """Unpickle a torch ``data.pkl`` without executing anything from the file.

    Parameters
    ----------
    file : binary file
        The pickle stream (``<prefix>/data.pkl``).
    load_storage : callable
        ``load_storage(kind, key, numel) -> 1-D ndarray``, reads ``<prefix>/data/<key>``.

    Notes
    -----
    ``find_class`` is the only way a pickle can reach a Python object by name (the GLOBAL,
    STACK_GLOBAL, INST, OBJ and EXT opcodes all go through it). Here it answers from the
    fixed table ``_ALLOWED`` and refuses everything else, e.g. ``posix.system``.
    ``persistent_load`` resolves the ``("storage", type, key, location, numel)`` tuples.
    """

    def __init__(self, file, load_storage):
        super().__init__(file)
        self._load_storage = load_storage

    def find_class(self, module, name):
        allowed = _ALLOWED.get(f"{module}.{name}")
        if allowed is None:
            raise _FormatError(
                f"refusing to unpickle global '{module}.{name}': a weights file may only "
                f"name torch's tensor/storage rebuilders and collections.OrderedDict "
                f"(nothing from the file is executed)")
        return allowed

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise _FormatError(f"unsupported persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        if not (isinstance(storage_type, _Allowed) and storage_type.name in _STORAGE_NAMES):
            raise _FormatError(f"persistent id names {storage_type!r:.80}, not a storage class")
        if not isinstance(key, str):
            raise _FormatError(f"storage key {key!r:.80} is not a string")
        return self._load_storage(storage_type.kind, key, _check_int(numel, "storage numel"))


# ---------------------------------------------------------------------------------------
# The three readers
# ---------------------------------------------------------------------------------------

def _find_torch_prefix(names):
    """Return ``"<prefix>/"`` of the archive's ``<prefix>/data.pkl``, or None."""
    found = [n[:-len("data.pkl")] for n in names
             if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(found) > 1:
        raise _FormatError(f"zip archive holds several data.pkl records: {found}")
    return found[0] if found else None


def _load_torch_zip(zf, prefix):
    names = set(zf.namelist())
    if prefix + "constants.pkl" in names or any(n.startswith(prefix + "code/") for n in names):
        raise _FormatError("this is a TorchScript archive (torch.jit.save), not a state dict; "
                           "save model.state_dict() with torch.save instead")
    byteorder = "little"
    if prefix + "byteorder" in names:
        byteorder = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise _FormatError(f"unknown byteorder record {byteorder!r}")

    storages = {}

    def load_storage(kind, key, numel):
        if key in storages:
            cached_kind, array = storages[key]
            if cached_kind != kind:
                raise _FormatError(f"storage {key!r} is read both as {cached_kind} and {kind}")
            return array
        member = f"{prefix}data/{key}"
        if member not in names:
            raise _FormatError(f"data.pkl refers to storage {key!r} but the archive has no "
                               f"member {member!r}")
        raw = zf.read(member)
        if len(raw) < numel * _RAW_ITEMSIZE[kind]:
            raise _FormatError(f"{member} holds {len(raw)} bytes, fewer than {numel} "
                               f"{kind} elements need")
        array = _raw_to_array(raw[:numel * _RAW_ITEMSIZE[kind]], kind, byteorder, member)
        storages[key] = (kind, array)
        return array

    with zf.open(prefix + "data.pkl") as f:
        obj = _AllowlistUnpickler(f, load_storage).load()
    return _state_dict_of(obj)


def _state_dict_of(obj):
    """Pick the state dict out of an unpickled checkpoint and check it maps str -> tensor.

    A training checkpoint often wraps it: ``{"state_dict": sd, "epoch": 3, ...}`` or
    ``{"model": sd, ...}``; the other top-level entries are metadata and are dropped.
    """
    if not isinstance(obj, dict):
        raise _FormatError(f"the checkpoint holds a {type(obj).__name__}, not a state dict "
                           f"(a dict of tensors)")
    for wrapper_key in ("state_dict", "model"):
        if isinstance(obj.get(wrapper_key), dict):
            obj = obj[wrapper_key]
            break
    out, seen = {}, set()
    for key, value in obj.items():
        if not isinstance(key, str):
            raise _FormatError(f"state dict key {key!r:.80} is not a string")
        if not isinstance(value, np.ndarray):
            raise _FormatError(f"state dict entry {key!r} is a {type(value).__name__}, "
                               f"not a tensor")
        # one tensor saved under two names (tied weights) is pickled once: copy the repeats
        out[key] = value.copy() if id(value) in seen else value
        seen.add(id(value))
    return out


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

    Notes
    -----
    Loading a torch checkpoint runs no code from the file; see the module docstring.
    Full pickled models (``torch.save(model)``), TorchScript archives and the pre-1.6
    torch format are refused with a ValueError.

    Examples
    --------
    >>> sd = load_weights("vgg16.pth")                       # doctest: +SKIP
    >>> sd["features.0.weight"].shape                         # doctest: +SKIP
    (64, 3, 3, 3)
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
                                           L.Cat, L.Identity)}
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
