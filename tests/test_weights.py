"""Weight I/O: torch checkpoints and safetensors read without torch, npz round trips.

torch writes the reference files; minigbp reads them in a subprocess where ``import torch``
fails, and every tensor must equal torch's own values exactly. safetensors files are written
by hand (struct + json), so the reader is checked against the format, not a library.
"""

import collections
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minigbp.io.weights import load_weights, save_weights

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------

def _torch():
    return pytest.importorskip("torch")


def _reference_state_dict():
    """A state dict exercising every storage dtype and layout torch.save can produce."""
    torch = _torch()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                              torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(16, 5))
    net[1].running_mean.normal_()
    net(torch.randn(2, 3, 4, 4))  # train-mode step: num_batches_tracked becomes 1 (int64)
    sd = collections.OrderedDict(net.state_dict())
    lin64 = torch.nn.Linear(4, 3).double()
    sd["head64.weight"] = lin64.weight.detach()
    sd["head64.bias"] = lin64.bias.detach()
    sd["half"] = torch.randn(3, 5).half()
    sd["bf16"] = torch.randn(2, 7).to(torch.bfloat16)
    sd["transposed"] = torch.randn(5, 4).t()  # non-contiguous, strides (1, 4)
    base = torch.arange(30, dtype=torch.float32).reshape(5, 6)
    sd["base"] = base
    sd["view"] = base[1:4, 2:5]  # shares base's storage, offset 8, strides (6, 1)
    sd["strided"] = torch.arange(20, dtype=torch.float64)[3::4]  # storage larger than tensor
    sd["param"] = torch.nn.Parameter(torch.randn(2, 2))  # pickled via _rebuild_parameter
    sd["mask"] = torch.tensor([True, False, True])
    sd["i8"] = torch.tensor([-128, 0, 127], dtype=torch.int8)
    sd["u8"] = torch.tensor([0, 200, 255], dtype=torch.uint8)
    sd["i16"] = torch.tensor([-30000, 7], dtype=torch.int16)
    sd["i32"] = torch.tensor([[-(2 ** 31), 2 ** 31 - 1]], dtype=torch.int32)
    sd["scalar"] = torch.tensor(2.5)
    sd["empty"] = torch.zeros(0, 3)
    return sd


def _expected(tensor):
    """torch tensor -> the numpy array load_weights must return (bfloat16 -> float32)."""
    torch = _torch()
    t = tensor.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.numpy()


def _load_without_torch(paths, out_dir):
    """Run load_weights on each path in a fresh interpreter where torch cannot be imported.

    Returns one (keys, arrays) pair per path, or the error message for a path that raised.
    """
    script = """
import json, sys
sys.modules["torch"] = None          # any "import torch" now raises ImportError
sys.modules["safetensors"] = None
import numpy as np
from minigbp.io.weights import load_weights
paths, out_dir = json.loads(sys.argv[1]), sys.argv[2]
report = []
for i, p in enumerate(paths):
    try:
        sd = load_weights(p)
    except ValueError as exc:
        report.append({"error": str(exc)})
        continue
    np.savez(f"{out_dir}/{i}.npz", *sd.values())
    report.append({"keys": list(sd)})
leaked = sorted(m for m, mod in sys.modules.items()
                if mod is not None and m.split(".")[0] in ("torch", "safetensors"))
print(json.dumps({"report": report, "leaked": leaked}))
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run([sys.executable, "-c", script, json.dumps([str(p) for p in paths]),
                           str(out_dir)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["leaked"] == []
    loaded = []
    for i, entry in enumerate(result["report"]):
        if "error" in entry:
            loaded.append(entry["error"])
            continue
        with np.load(out_dir / f"{i}.npz") as npz:
            arrays = [npz[f"arr_{j}"] for j in range(len(entry["keys"]))]
        loaded.append((entry["keys"], arrays))
    return loaded


def _assert_state_dicts_equal(keys, arrays, reference):
    assert keys == list(reference)
    for key, got in zip(keys, arrays):
        want = _expected(reference[key])
        assert got.dtype == want.dtype, key
        assert got.shape == want.shape, key
        np.testing.assert_array_equal(got, want, err_msg=key, strict=True)


class _Storage:
    """Placeholder that _pickle_torch_zip turns into a ("storage", ...) persistent id."""

    def __init__(self, storage_class, key, numel):
        self.storage_class, self.key, self.numel = storage_class, key, numel


def _pickle_torch_zip(path, obj, records, prefix="archive", byteorder=b"little"):
    """Write a zip laid out like torch.save's, with ``obj`` pickled as data.pkl.

    ``records`` maps storage key -> raw bytes (``<prefix>/data/<key>``).
    """
    class Pickler(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, _Storage):
                return ("storage", o.storage_class, o.key, "cpu", o.numel)
            return None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{prefix}/data.pkl", buf.getvalue())
        zf.writestr(f"{prefix}/byteorder", byteorder)
        for key, raw in records.items():
            zf.writestr(f"{prefix}/data/{key}", raw)
        zf.writestr(f"{prefix}/version", b"3\n")


class _Tensor:
    """Pickles as torch._utils._rebuild_tensor_v2(storage, offset, shape, strides, ...)."""

    def __init__(self, storage, offset, shape, strides):
        self.args = (storage, offset, shape, strides, False, collections.OrderedDict())

    def __reduce__(self):
        return (_torch()._utils._rebuild_tensor_v2, self.args)


def _write_safetensors(path, tensors, metadata=None, fix_offsets=None):
    """Write a safetensors file by hand: u64 header length, JSON header, data section.

    ``tensors`` maps name -> (dtype string, shape, raw little-endian bytes).
    ``fix_offsets`` maps name -> data_offsets to write instead of the true ones.
    """
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        offsets = [len(data), len(data) + len(raw)]
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": (fix_offsets or {}).get(name, offsets)}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header to 8 bytes with spaces
    Path(path).write_bytes(struct.pack("<Q", len(text)) + text + data)


_ST_DTYPE = {"float16": "F16", "float32": "F32", "float64": "F64", "int64": "I64",
             "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory):
    """torch.save outputs: a plain state dict and two wrapped checkpoints."""
    torch = _torch()
    tmp = tmp_path_factory.mktemp("torch_files")
    sd = _reference_state_dict()
    files = {"plain": tmp / "net.pth", "wrapped": tmp / "ckpt.pt", "model": tmp / "m.pth"}
    torch.save(sd, files["plain"])
    trained = torch.nn.Parameter(sd["param"].detach().clone())
    optimizer = torch.optim.SGD([trained], lr=0.1, momentum=0.9)
    trained.grad = torch.ones(2, 2)
    optimizer.step()  # the optimizer state now holds a momentum tensor
    torch.save({"state_dict": sd, "epoch": 3, "optimizer": optimizer.state_dict(),
                "best": 0.25, "tags": ["a", "b"]}, files["wrapped"])
    torch.save({"model": sd}, files["model"])
    return sd, files


# ---------------------------------------------------------------------------------------
# torch checkpoints
# ---------------------------------------------------------------------------------------

def test_torch_checkpoints_load_exactly_without_torch(torch_files, tmp_path):
    sd, files = torch_files
    loaded = _load_without_torch([files["plain"], files["wrapped"], files["model"]], tmp_path)
    for entry in loaded:
        assert not isinstance(entry, str), entry
        _assert_state_dicts_equal(*entry, sd)


def test_torch_checkpoint_in_process(torch_files):
    sd, files = torch_files
    got = load_weights(files["plain"])
    _assert_state_dicts_equal(list(got), list(got.values()), sd)
    for key, array in got.items():
        assert array.flags.c_contiguous and array.flags.writeable and array.flags.owndata, key
    # views of one storage come back as independent arrays
    got["base"][:] = -1
    assert got["view"].min() >= 0


def test_one_tensor_under_two_names_gives_two_arrays(tmp_path):
    torch = _torch()
    tied = torch.randn(3, 2)
    path = tmp_path / "tied.pth"
    torch.save({"embed.weight": tied, "head.weight": tied}, path)
    got = load_weights(path)
    np.testing.assert_array_equal(got["head.weight"], tied.numpy(), strict=True)
    got["embed.weight"][:] = 0
    np.testing.assert_array_equal(got["head.weight"], tied.numpy(), strict=True)


def test_format_is_detected_by_content(torch_files, tmp_path):
    sd, files = torch_files
    odd_name = tmp_path / "weights.safetensors"  # really a torch zip
    odd_name.write_bytes(files["plain"].read_bytes())
    got = load_weights(odd_name)
    _assert_state_dicts_equal(list(got), list(got.values()), sd)


def test_big_endian_checkpoint(tmp_path):
    torch = _torch()
    sd = {"a": torch.randn(2, 3), "b": torch.tensor([1, -2, 2 ** 40]),
          "c": torch.randn(4).to(torch.bfloat16), "d": torch.randn(3).double()}
    little = tmp_path / "little.pth"
    torch.save(sd, little)
    itemsize = {"0": 4, "1": 8, "2": 2, "3": 8}  # storage keys in order of first use
    big = tmp_path / "big.pth"
    with zipfile.ZipFile(little) as src, zipfile.ZipFile(big, "w") as dst:
        for info in src.infolist():
            raw = src.read(info)
            if info.filename.endswith("/byteorder"):
                raw = b"big"
            elif "/data/" in info.filename:
                n = itemsize[info.filename.rsplit("/", 1)[1]]
                raw = np.frombuffer(raw, f"<u{n}").byteswap().tobytes()
            dst.writestr(info.filename, raw)
    got = load_weights(big)
    _assert_state_dicts_equal(list(got), list(got.values()), sd)


# ---------------------------------------------------------------------------------------
# the allowlist
# ---------------------------------------------------------------------------------------

class _RunsShell:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_malicious_checkpoint_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    command = f"touch {marker}"
    # the payload is live: a plain pickle.loads would run it
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(_RunsShell(f"touch {live}"), protocol=2))
    assert live.exists()

    evil = tmp_path / "evil.pth"
    weight = _Tensor(_Storage(_torch().FloatStorage, "0", 2), 0, (2,), (1,))
    _pickle_torch_zip(evil, collections.OrderedDict(w=weight, x=_RunsShell(command)),
                      {"0": np.ones(2, "<f4").tobytes()})
    with pytest.raises(ValueError, match=r"(posix|os|nt)\.system") as info:
        load_weights(evil)
    assert "evil.pth" in str(info.value)
    assert not marker.exists()

    # the same payload written by torch.save itself
    evil2 = tmp_path / "evil2.pth"
    _torch().save({"w": _torch().ones(2), "x": _RunsShell(command)}, evil2)
    with pytest.raises(ValueError, match=r"evil2\.pth.*(posix|os|nt)\.system"):
        load_weights(evil2)
    assert not marker.exists()


@pytest.mark.parametrize("payload, named", [
    (b"\x80\x02cbuiltins\neval\nq\x00X\x03\x00\x00\x001+1q\x01\x85q\x02Rq\x03.",
     "builtins.eval"),
    (b"\x80\x02ctorch\nload\nq\x00.", "torch.load"),
    (b"\x80\x02ccollections\ndefaultdict\nq\x00.", "collections.defaultdict"),
    # BUILD on an allowlisted global must not be able to modify it
    (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nq\x00}q\x01X\x01\x00\x00\x00aK\x01sb.",
     "_rebuild_tensor_v2"),
    (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nq\x00N}q\x01X\x02\x00\x00\x00fnK\x01s"
     b"\x86q\x02b.", "_rebuild_tensor_v2"),
])
def test_other_globals_are_refused(tmp_path, payload, named):
    path = tmp_path / "bad.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("bad/data.pkl", payload)
    with pytest.raises(ValueError, match="bad.pth") as info:
        load_weights(path)
    assert named in str(info.value)


def test_full_model_pickle_is_refused(tmp_path):
    torch = _torch()
    path = tmp_path / "whole.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(ValueError, match=r"whole\.pth.*torch\.nn\.modules\.linear\.Linear"):
        load_weights(path)


@pytest.mark.parametrize("shape, strides, offset, message", [
    ((5,), (1,), 0, "reaches element 4"),
    ((2, 2), (3, 1), 0, "reaches element 4"),
    ((2,), (1,), 3, "reaches element 4"),
    ((2,), (-1,), 1, "must be an int >= 0"),
    ((2, 2), (1,), 0, "differ in length"),
])
def test_tensor_outside_its_storage_is_refused(tmp_path, shape, strides, offset, message):
    path = tmp_path / "oob.pth"
    t = _Tensor(_Storage(_torch().FloatStorage, "0", 4), offset, shape, strides)
    _pickle_torch_zip(path, {"t": t}, {"0": np.arange(4, dtype="<f4").tobytes()})
    with pytest.raises(ValueError, match=message) as info:
        load_weights(path)
    assert "oob.pth" in str(info.value)


def test_missing_storage_record_and_short_storage(tmp_path):
    path = tmp_path / "nodata.pth"
    t = _Tensor(_Storage(_torch().FloatStorage, "7", 4), 0, (4,), (1,))
    _pickle_torch_zip(path, {"t": t}, {})
    with pytest.raises(ValueError, match=r"nodata\.pth.*no member 'archive/data/7'"):
        load_weights(path)
    _pickle_torch_zip(path, {"t": t}, {"7": b"\0" * 12})
    with pytest.raises(ValueError, match=r"nodata\.pth.*12 bytes, fewer than 4"):
        load_weights(path)


def test_non_tensor_values_in_plain_state_dict(tmp_path):
    torch = _torch()
    path = tmp_path / "mixed.pth"
    torch.save({"w": torch.ones(2), "epoch": 3}, path)
    with pytest.raises(ValueError, match=r"mixed\.pth.*'epoch'"):
        load_weights(path)
    torch.save({"state_dict": {"w": torch.ones(2), "nested": {"b": torch.ones(1)}}}, path)
    with pytest.raises(ValueError, match=r"mixed\.pth.*'nested'"):
        load_weights(path)
    torch.save([torch.ones(2)], path)
    with pytest.raises(ValueError, match=r"mixed\.pth.*list"):
        load_weights(path)


# ---------------------------------------------------------------------------------------
# broken files
# ---------------------------------------------------------------------------------------

def test_broken_files(torch_files, tmp_path):
    _, files = torch_files
    real = files["plain"].read_bytes()
    cases = {
        "half.pth": real[: len(real) // 2],
        "empty.pth": b"",
        "random.bin": np.random.default_rng(1).bytes(4096),
        "notes.txt": b"these are not the weights you are looking for\n",
        "tiny.pt": b"PK",
        "zip.npz": None,  # a zip with a non-.npy member
    }
    for name, data in cases.items():
        path = tmp_path / name
        if data is None:
            with zipfile.ZipFile(path, "w") as zf:
                zf.writestr("readme.txt", "hello")
        else:
            path.write_bytes(data)
        with pytest.raises(ValueError) as info:
            load_weights(path)
        assert name in str(info.value), (name, str(info.value))
    with pytest.raises(ValueError, match="empty"):
        load_weights(tmp_path / "empty.pth")


def test_corrupt_storage_bytes_fail_the_crc(torch_files, tmp_path):
    _, files = torch_files
    raw = bytearray(files["plain"].read_bytes())
    with zipfile.ZipFile(files["plain"]) as zf:
        offset = zf.getinfo("net/data/0").header_offset
    # torch pads the *local* header's extra field for alignment: read its lengths there
    name_len, extra_len = struct.unpack("<HH", raw[offset + 26: offset + 30])
    start = offset + 30 + name_len + extra_len
    raw[start] ^= 0xFF
    path = tmp_path / "flipped.pth"
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"flipped\.pth.*(CRC|corrupt)"):
        load_weights(path)


def test_legacy_torch_format_is_refused(tmp_path):
    torch = _torch()
    path = tmp_path / "old.pth"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match=r"old\.pth.*legacy"):
        load_weights(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "nope.pth")


# ---------------------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------------------

def _bf16_bytes(values):
    """float32 values exactly representable in bfloat16 -> raw little-endian bf16 bytes."""
    return (np.asarray(values, "<f4").view("<u4") >> 16).astype("<u2").tobytes()


def test_safetensors_all_dtypes(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "float16": rng.standard_normal((2, 3)).astype(np.float16),
        "float32": rng.standard_normal((4,)).astype(np.float32),
        "float64": rng.standard_normal((2, 2, 2)),
        "int64": np.array([-(2 ** 62), 5], np.int64),
        "int32": np.array([[1, -2]], np.int32),
        "int16": np.array([-3], np.int16),
        "int8": np.array([-128, 127], np.int8),
        "uint8": np.array([0, 255], np.uint8),
        "bool": np.array([True, False, True]),
        "scalar": np.array(1.5, np.float32),
        "empty": np.zeros((0, 2), np.float32),
    }
    tensors = {name: (_ST_DTYPE[a.dtype.name], a.shape, a.astype(a.dtype.newbyteorder("<"))
                      .tobytes()) for name, a in arrays.items()}
    bf = np.array([1.0, -2.5, 0.0078125, 1.5 * 2.0 ** 100, -0.0], np.float32)
    tensors["bf16"] = ("BF16", (5,), _bf16_bytes(bf))
    path = tmp_path / "w.safetensors"
    _write_safetensors(path, tensors, metadata={"format": "pt"})
    got = load_weights(path)
    assert list(got) == list(tensors)
    for name, a in arrays.items():
        np.testing.assert_array_equal(got[name], a, err_msg=name, strict=True)
    np.testing.assert_array_equal(got["bf16"], bf, strict=True)


def test_safetensors_matches_torch_save(torch_files, tmp_path):
    """The same tensors, written as safetensors by hand and by torch.save, load identically."""
    torch = _torch()
    sd, files = torch_files
    st_dtype = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32",
                torch.float64: "F64", torch.int64: "I64", torch.int32: "I32",
                torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
    tensors = {}
    for name, t in sd.items():
        t = t.detach().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        tensors[name] = (st_dtype[t.dtype], tuple(t.shape), raw)
    path = tmp_path / "same.safetensors"
    _write_safetensors(path, tensors)
    from_st, from_pth = load_weights(path), load_weights(files["plain"])
    assert list(from_st) == list(from_pth)
    for name in from_st:
        np.testing.assert_array_equal(from_st[name], from_pth[name], err_msg=name, strict=True)


@pytest.mark.parametrize("fix, message", [
    ({"b": [8, 40]}, "outside the data section"),
    ({"b": [8, 12]}, "span 4 bytes"),
    ({"b": [12, 8]}, "outside the data section"),
    ({"b": [8]}, r"\[begin, end\]"),
    ({"b": [8, "16"]}, "must be an int"),
])
def test_safetensors_bad_offsets(tmp_path, fix, message):
    path = tmp_path / "bad.safetensors"
    tensors = {"a": ("F32", (2,), b"\0" * 8), "b": ("F32", (2,), b"\0" * 8)}
    _write_safetensors(path, tensors, fix_offsets=fix)
    with pytest.raises(ValueError, match=message) as info:
        load_weights(path)
    assert "bad.safetensors" in str(info.value)


def test_safetensors_broken_header(tmp_path):
    path = tmp_path / "h.safetensors"
    good = {"a": ("F32", (2,), b"\0" * 8)}
    _write_safetensors(path, good)
    raw = path.read_bytes()
    entry = b'{"dtype":"U8","shape":[1],"data_offsets":[0,1]}'
    duplicate = (b'{"a":' + entry + b',"a":' + entry + b"}").ljust(120)
    cases = [
        (raw[:-3], "outside the data section"),
        (raw[:20], "truncated"),
        (struct.pack("<Q", 8) + b"{nope!!}" + b"\0" * 8, "not valid JSON"),
        (raw.replace(b'"F32"', b'"C64"'), "unsupported dtype 'C64'"),
        (struct.pack("<Q", 120) + duplicate + b"\0", "repeats a key"),
        (struct.pack("<Q", 8) + b"[1,2,3] " + b"\0" * 8, "not a recognised"),
        (struct.pack("<Q", 8) + b'{"a": 1}', "needs dtype, shape, data_offsets"),
    ]
    for data, message in cases:
        path.write_bytes(data)
        with pytest.raises(ValueError, match=r"h\.safetensors: .*" + message):
            load_weights(path)


# ---------------------------------------------------------------------------------------
# npz
# ---------------------------------------------------------------------------------------

def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    sd = {
        "features.0.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "features.0.bias": rng.standard_normal(4).astype(np.float32),
        "head.weight": rng.standard_normal((2, 5)),
        "half": rng.standard_normal(3).astype(np.float16),
        "bn.num_batches_tracked": np.array(7, np.int64),
        "mask": np.array([True, False]),
        "empty": np.zeros((0, 4), np.float32),
        "fortran": np.asfortranarray(rng.standard_normal((3, 2))),
    }
    path = tmp_path / "weights.bin"  # written exactly there, no ".npz" appended
    save_weights(sd, path)
    assert path.exists() and not (tmp_path / "weights.bin.npz").exists()
    got = load_weights(path)
    assert list(got) == list(sd)
    for key, value in sd.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key, strict=True)
    save_weights({}, tmp_path / "none.npz")
    assert load_weights(tmp_path / "none.npz") == {}


def test_torch_checkpoint_to_npz(torch_files, tmp_path):
    sd, files = torch_files
    path = tmp_path / "converted.npz"
    save_weights(load_weights(files["plain"]), path)
    got = load_weights(path)
    _assert_state_dicts_equal(list(got), list(got.values()), sd)


def test_save_weights_refuses_what_npz_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="object"):
        save_weights({"a": np.array([None, 1], dtype=object)}, tmp_path / "o.npz")
    with pytest.raises(TypeError, match="not a string"):
        save_weights({1: np.zeros(2)}, tmp_path / "k.npz")
    with pytest.raises(ValueError, match="np.savez"):
        save_weights({"file": np.zeros(2)}, tmp_path / "f.npz")


def test_npz_with_pickled_object_array_is_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"obj\.npz"):
        load_weights(path)
