"""PyTorch checkpoints read without torch and without running anything from the file.

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

:func:`minigbp.load_weights` (:mod:`minigbp.io.weights`) recognises the file and calls
:func:`_load_torch_zip`.
"""

import collections
import pickle

import numpy as np

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


