"""``mg.save`` / ``mg.load`` / ``mg.load_weights``, and loading weights into the zoo.

``mg.save`` writes one ``.npz``: the state dict plus the architecture as JSON under
``"__architecture__"``. These tests check that the round trip is exact for a nested
model using every layer type, that the two readers keep to their roles (``load`` needs
an architecture, ``load_weights`` returns only arrays), that broken files raise a
``ValueError`` naming the file, and that a state dict with wrong shapes is refused
whole, listing every bad key, without touching the model.
"""

import json
import re

import numpy as np
import pytest

import minigbp as mg


def every_layer_model():
    """A nested model with every layer type and most non-default hyperparameters."""
    mg.manual_seed(0)
    return mg.Sequential(
        stem=mg.Sequential(
            conv=mg.Conv2d(3, 6, 3, stride=2, padding=1, groups=3, bias=False),
            act=mg.ReLU(inplace=True),
            pool=mg.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        ),
        body=mg.Sequential(
            mg.Conv2d(6, 8, (3, 1), padding=(2, 0), dilation=(2, 1)), mg.ReLU(),
            mg.MaxPool2d(2, stride=1, dilation=2),
            mg.AvgPool2d(2, stride=1, padding=1, ceil_mode=True, count_include_pad=False),
            mg.AvgPool2d(3, stride=2),
            mg.AdaptiveAvgPool2d((3, None)),
        ),
        flatten=mg.Flatten(),
        head=mg.Sequential(mg.Dropout(0.25), mg.Linear(48, 5, bias=False), mg.ReLU(), mg.Linear(5, 4)),
    )


LAYER_TYPES = {mg.Conv2d, mg.ReLU, mg.MaxPool2d, mg.AvgPool2d, mg.AdaptiveAvgPool2d, mg.Flatten,
               mg.Dropout, mg.Linear}


def assert_same_model(a, b):
    assert b.spec() == a.spec()
    assert repr(b) == repr(a)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sb) == list(sa)
    for key in sa:
        assert sb[key].dtype == sa[key].dtype, key
        np.testing.assert_array_equal(sb[key], sa[key], err_msg=key)


# ---------------------------------------------------------------------------------------
# round trip
# ---------------------------------------------------------------------------------------

def test_round_trip_of_a_nested_model_with_every_layer_type(tmp_path):
    model = every_layer_model()
    assert {type(layer) for _, layer in model.named_leaves()} == LAYER_TYPES
    path = tmp_path / "net.npz"
    mg.save(model, path)
    loaded = mg.load(path)
    assert loaded is not model
    assert_same_model(model, loaded)
    assert [n for n, _ in loaded.named_modules()] == [n for n, _ in model.named_modules()]

    rng = np.random.default_rng(1)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((3, 3, 23, 23)).astype(dtype)
        out = loaded(x)
        assert out.dtype == dtype and out.shape == (3, 4)
        np.testing.assert_array_equal(out, model(x))
        for mode in mg.MODES:
            np.testing.assert_array_equal(mg.backprop(loaded, x, target=[0, 2, 3], mode=mode),
                                          mg.backprop(model, x, target=[0, 2, 3], mode=mode))
            # dotted names survive, so intermediate layers are reachable by the same name
            np.testing.assert_array_equal(mg.backprop(loaded, x, target=1, mode=mode, layer="body.1"),
                                          mg.backprop(model, x, target=1, mode=mode, layer="body.1"))


def test_round_trip_keeps_float64_parameters_and_any_file_name(tmp_path):
    model = every_layer_model()
    model.load_state_dict({k: v.astype(np.float64) + 0.1 for k, v in model.state_dict().items()})
    path = tmp_path / "weights.bin"  # written exactly there: no ".npz" appended
    mg.save(model, path)
    assert path.exists() and not (tmp_path / "weights.bin.npz").exists()
    loaded = mg.load(str(path))
    assert_same_model(model, loaded)
    assert all(v.dtype == np.float64 for v in loaded.state_dict().values())


def test_round_trip_of_a_flat_model_and_of_the_zoo_architectures(tmp_path):
    flat = mg.Sequential(mg.Conv2d(1, 2, 3), mg.ReLU(), mg.Flatten(), mg.Linear(2 * 4 * 4, 3))
    mg.save(flat, tmp_path / "flat.npz")
    assert_same_model(flat, mg.load(tmp_path / "flat.npz"))
    digits = mg.zoo.digits(pretrained=False)
    mg.save(digits, tmp_path / "digits.npz")
    assert_same_model(digits, mg.load(tmp_path / "digits.npz"))


def test_saved_file_is_a_plain_npz_with_the_architecture_as_json(tmp_path):
    model = every_layer_model()
    mg.save(model, tmp_path / "net.npz")
    with np.load(tmp_path / "net.npz", allow_pickle=False) as npz:  # no pickle needed
        assert npz.files == list(model.state_dict()) + ["__architecture__"]
        assert json.loads(str(npz["__architecture__"])) == model.spec()


# ---------------------------------------------------------------------------------------
# load vs load_weights
# ---------------------------------------------------------------------------------------

def test_load_on_a_weights_only_file_explains_what_to_do(tmp_path):
    model = every_layer_model()
    path = tmp_path / "weights_only.npz"
    mg.save_weights(model.state_dict(), path)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*no architecture.*load_weights"):
        mg.load(path)
    # the weights themselves are fine
    rebuilt = every_layer_model()
    rebuilt.load_state_dict(mg.load_weights(path))
    assert_same_model(model, rebuilt)


def test_load_on_a_torch_checkpoint_explains_what_to_do(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "net.pth"
    torch.save({"0.weight": torch.ones(2, 1, 3, 3)}, path)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*no architecture"):
        mg.load(path)


def test_load_weights_on_a_saved_model_returns_only_the_arrays(tmp_path):
    model = every_layer_model()
    path = tmp_path / "net.npz"
    mg.save(model, path)
    weights = mg.load_weights(path)
    assert list(weights) == list(model.state_dict())
    assert "__architecture__" not in weights
    for key, value in model.state_dict().items():
        assert isinstance(weights[key], np.ndarray) and weights[key].dtype == value.dtype, key
        np.testing.assert_array_equal(weights[key], value, err_msg=key)


def test_load_of_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        mg.load(tmp_path / "nope.npz")


# ---------------------------------------------------------------------------------------
# broken files
# ---------------------------------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "net.npz"
    mg.save(every_layer_model(), path)
    return path.read_bytes()


@pytest.mark.parametrize("cut", [0, 1, 9, 100, 0.5, -23, -1])
@pytest.mark.parametrize("reader", ["load", "load_weights"])
def test_truncated_file_raises_value_error_naming_it(tmp_path, saved, cut, reader):
    n = int(len(saved) * cut) if isinstance(cut, float) else cut % len(saved)
    path = tmp_path / "truncated.npz"
    path.write_bytes(saved[:n])
    with pytest.raises(ValueError, match=re.escape(str(path))):
        getattr(mg, reader)(path)


@pytest.mark.parametrize("reader", ["load", "load_weights"])
def test_corrupt_member_data_raises_value_error_naming_it(tmp_path, saved, reader):
    data = bytearray(saved)
    start = data.index(b"\x93NUMPY") + 200  # inside the first array's numbers
    data[start:start + 16] = bytes(b ^ 0xFF for b in data[start:start + 16])
    path = tmp_path / "corrupt.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*(CRC|corrupt)"):
        getattr(mg, reader)(path)


@pytest.mark.parametrize("reader", ["load", "load_weights"])
def test_garbage_file_raises_value_error_naming_it(tmp_path, reader):
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"this is not a weights file at all\n" * 4)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        getattr(mg, reader)(path)


def write_with_architecture(path, weights, architecture):
    with open(path, "wb") as f:
        np.savez(f, **weights, __architecture__=architecture)


@pytest.mark.parametrize("architecture", [
    json.dumps([1, 2]),                                               # not an object
    json.dumps({"type": "Sequential", "children": [["a", None]]}),    # a child that is not a spec
    json.dumps({"type": "Sequential", "children": [["a", {"type": "BatchNorm2d"}]]}),  # unknown layer
    json.dumps({"type": "Sequential", "children": [["a", {"type": "Conv2d", "config": {}}]]}),
])
def test_bad_architecture_raises_value_error_naming_the_file(tmp_path, architecture):
    path = tmp_path / "bad_arch.npz"
    write_with_architecture(path, {}, np.array(architecture))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*architecture"):
        mg.load(path)


# Broken architectures: every one is a ValueError naming the file.
@pytest.mark.parametrize("architecture", [
    np.array("{not json"),                                         # JSONDecodeError, no file name
    np.arange(3),                                                  # a number array, not JSON text
    np.array(json.dumps({"type": "ReLU", "config": [1]})),        # config not a dict: AttributeError
    np.array(json.dumps({"type": "ReLU", "config": {}})),         # a leaf, not a Sequential: AttributeError
])
def test_unparseable_architecture_raises_value_error_naming_the_file(tmp_path, architecture):
    path = tmp_path / "bad_json.npz"
    write_with_architecture(path, {}, architecture)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        mg.load(path)


def test_weights_not_matching_the_architecture_name_the_file(tmp_path):
    model = every_layer_model()
    spec = model.spec()
    spec["children"][0][1]["children"][0][1]["config"]["out_channels"] = 9  # stem.conv: 6 -> 9
    path = tmp_path / "mismatch.npz"
    write_with_architecture(path, model.state_dict(), np.array(json.dumps(spec)))
    with pytest.raises(ValueError, match=re.escape(str(path)) + "(.|\n)*stem.conv.weight"):
        mg.load(path)


def test_weights_not_matching_the_architecture_raise_value_error(tmp_path):
    model = every_layer_model()
    spec = model.spec()
    spec["children"][0][1]["children"][0][1]["config"]["out_channels"] = 9
    path = tmp_path / "mismatch.npz"
    write_with_architecture(path, model.state_dict(), np.array(json.dumps(spec)))
    with pytest.raises(ValueError, match="stem.conv.weight"):
        mg.load(path)


# ---------------------------------------------------------------------------------------
# wrong shapes in zoo.vgg16(weights=...)
# ---------------------------------------------------------------------------------------

@pytest.fixture
def zero_init(monkeypatch):
    """Fresh minigbp layers start from (lazily allocated) zeros instead of random numbers:
    these tests only look at error messages, and VGG's 138M random initial values would
    cost seconds of memory traffic per model."""
    monkeypatch.setattr(mg.layers, "_uniform", lambda shape, fan_in: np.zeros(shape, np.float32))


@pytest.fixture(scope="module")
def vgg16_model():
    return mg.zoo.vgg16()


@pytest.fixture(scope="module")
def vgg16_shapes(vgg16_model):
    return {k: v.shape for k, v in vgg16_model.state_dict().items()}


def assert_lists_exactly(message, bad_keys, all_keys):
    listed = {k for k in all_keys if re.search(re.escape(repr(k)) + ": shape", message)}
    assert listed == set(bad_keys), message
    assert f"{len(bad_keys)} problem(s)" in message, message


def test_vgg16_wrong_shapes_from_a_file_are_all_listed(tmp_path, vgg16_shapes, zero_init):
    # a file holding only some keys, all with the wrong shape (first axis off by one)
    wrong = {k: np.zeros((s[0] + 1,) + s[1:], np.float32) for k, s in vgg16_shapes.items()
             if k.startswith("features.2.") or k.startswith("classifier.6.")}
    path = tmp_path / "vgg16_bad.npz"
    mg.save_weights(wrong, path)
    with pytest.raises(ValueError) as info:
        mg.zoo.vgg16(weights=path)
    message = str(info.value)
    listed = {k for k in vgg16_shapes if re.search(re.escape(repr(k)) + ": shape", message)}
    assert listed == set(wrong) and len(wrong) == 4, message
    assert "missing key 'features.0.weight'" in message  # and the absent keys are listed too


def test_vgg16_wrong_shapes_leave_nothing_half_loaded(vgg16_model, vgg16_shapes, zero_init):
    model = vgg16_model
    before = {k: (v, v.copy() if v.size < 3_000_000 else v[:2].copy()) for k, v in model.state_dict().items()}
    # correct shapes everywhere (zero-stride views: no memory) except five keys spread
    # through the network, so a loader that copied as it went would have changed
    # features.0.weight before meeting the first bad key
    sd = {k: np.broadcast_to(np.float32(7), s) for k, s in vgg16_shapes.items()}
    wrong = {
        "features.0.bias": (63,),                       # (64,) wanted
        "features.10.weight": (256, 128, 1, 3),         # (256, 128, 3, 3)
        "features.28.weight": (512, 512, 3, 3, 1),      # (512, 512, 3, 3)
        "classifier.0.weight": (4096, 25087),           # (4096, 25088)
        "classifier.6.bias": (10,),                     # (1000,)
    }
    sd.update({k: np.zeros(s, np.float32) for k, s in wrong.items()})  # lazily allocated zeros
    bad = list(wrong)

    with pytest.raises(ValueError) as info:
        model.load_state_dict(sd)
    assert_lists_exactly(str(info.value), bad, vgg16_shapes)
    assert "nothing was loaded" in str(info.value)
    for key, value in model.state_dict().items():
        obj, copy = before[key]
        assert value is obj, key  # no parameter was replaced
        np.testing.assert_array_equal(value if value.size < 3_000_000 else value[:2], copy, err_msg=key)

    # the same dict through the zoo: the same five keys, and no model comes back at all
    with pytest.raises(ValueError) as info:
        mg.zoo.vgg16(weights=sd)
    assert_lists_exactly(str(info.value), bad, vgg16_shapes)
