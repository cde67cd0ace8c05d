"""Image loading, presets (and their inverses), display normalizations and figures."""

import numpy as np
import pytest
from PIL import Image

from minigbp import image as I
from minigbp import visualize as V


def photo(h=300, w=400, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_load_image_formats(tmp_path):
    rgb = photo(20, 30)
    for ext in ("png", "bmp", "tiff"):
        p = tmp_path / f"a.{ext}"
        Image.fromarray(rgb).save(p)
        assert np.array_equal(I.load_image(p), rgb)
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "g.png")  # grayscale -> RGB
    g = I.load_image(tmp_path / "g.png")
    assert g.shape == (20, 30, 3) and np.array_equal(g[:, :, 1], rgb[:, :, 0])
    Image.fromarray(np.dstack([rgb, rgb[:, :, :1]])).save(tmp_path / "a4.png")  # alpha dropped
    assert I.load_image(tmp_path / "a4.png").shape == (20, 30, 3)
    smooth = np.broadcast_to(np.linspace(0, 255, 30).astype(np.uint8)[None, :, None], (20, 30, 3))
    Image.fromarray(np.ascontiguousarray(smooth)).save(tmp_path / "a.jpg", quality=95)
    assert np.abs(I.load_image(tmp_path / "a.jpg").astype(int) - smooth).max() < 8  # lossy, but close


def test_load_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        I.load_image(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match="text.png: not a readable image"):
        I.load_image(tmp_path / "text.png")
    Image.fromarray(photo(40, 40)).save(tmp_path / "big.png")
    with pytest.raises(ValueError, match="big.png.*decompression bomb"):
        I.load_image(tmp_path / "big.png", max_pixels=1000)
    # a truncated file
    data = (tmp_path / "big.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.png"):
        I.load_image(tmp_path / "cut.png")


def test_resize_and_crop_follow_torchvision_rules():
    img = photo(300, 400)
    r = I.resize(img, 256)
    assert r.shape == (256, 341, 3)  # shorter side 256, int(256 * 400 / 300)
    c = I.center_crop(r, 224)
    assert c.shape == (224, 224, 3)
    assert np.array_equal(c, r[16:240, 58:282])
    with pytest.raises(ValueError, match="larger than image"):
        I.center_crop(img, 500)


@pytest.mark.parametrize("name", ["imagenet", "caffe"])
def test_presets_invert_exactly(name):
    p = I.get_preprocessing(name)
    img = photo()
    x = p.preprocess(img)
    assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32
    seen = p.prepare(img)
    back = p.deprocess(x)
    assert back.shape == (224, 224, 3)
    assert np.abs(back * 255 - seen).max() < 1e-3  # float32 rounding of the forward map only


def test_imagenet_and_caffe_values():
    img = np.zeros((224, 224, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 30
    x = I.get_preprocessing("imagenet").to_input(img)
    assert np.allclose(x[:, 0, 0], (np.array([10, 20, 30]) / 255 - I.IMAGENET_MEAN) / I.IMAGENET_STD)
    x = I.get_preprocessing("caffe").to_input(img)  # BGR, mean-subtracted, 0..255 scale
    assert np.allclose(x[:, 0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68])


def test_digits_preset_inverts_and_makes_ink_bright():
    p = I.get_preprocessing("digits")
    paper = np.full((64, 64), 255, np.uint8)
    paper[8:56, 24:40] = 0  # a dark "1" on white paper
    x = p.preprocess(paper)
    assert x.shape == (1, 1, 32, 32) and x.dtype == np.float32
    assert x[0, 0, 16, 16] > 0.5 and x[0, 0, 0, 0] < 0.05  # ink bright, background dark
    back = p.deprocess(x)
    assert back.shape == (32, 32, 3) and np.allclose(back[:, :, 0], x[0, 0])


def test_unknown_preprocessing():
    with pytest.raises(ValueError, match="unknown preprocessing 'vgg'.*imagenet"):
        I.get_preprocessing("vgg")


def test_normalizations():
    a = np.array([[-2.0, 0.0], [1.0, 4.0]])
    assert np.allclose(V.normalize(a, "minmax"), [[0, 1 / 3], [0.5, 1]])
    assert np.allclose(V.normalize(a, "symmetric"), [[0.25, 0.5], [0.625, 1.0]])
    big = np.concatenate([np.linspace(-1, 1, 999), [1000.0]])
    p = V.normalize(big, "percentile", 99)
    assert p.min() >= 0 and p.max() <= 1 and p[-1] == 1.0
    assert np.std(p[:-1]) > 0.1  # the outlier does not wash out the rest
    assert np.std(V.normalize(big, "minmax")[:-1]) < 0.01
    assert np.all(V.normalize(np.zeros(3), "minmax") == 0)
    with pytest.raises(ValueError, match="unknown normalization"):
        V.normalize(a, "log")


def test_magnitude_display_and_overlay():
    s = np.random.default_rng(0).standard_normal((3, 8, 9))
    m = V.magnitude(s)
    assert m.shape == (8, 9) and np.allclose(m, np.abs(s).max(axis=0))
    rgb = V.to_display(s)
    assert rgb.shape == (8, 9, 3) and rgb.min() == 0 and rgb.max() == 1
    assert np.allclose(V.to_display(s, channels_bgr=True), rgb[:, :, ::-1])
    gray = V.to_display(s, gray=True)
    assert gray.shape == (8, 9) and gray.max() == 1
    o = V.overlay(np.zeros((8, 9, 3)), V.normalize(m))
    assert o.shape == (8, 9, 3) and 0 <= o.min() and o.max() <= 1


def test_save_png_and_comparison_figure(tmp_path):
    V.save_png(np.linspace(0, 1, 12).reshape(3, 4), tmp_path / "a.png", scale=4)
    with Image.open(tmp_path / "a.png") as im:
        assert im.size == (16, 12)
    panels = [("input", np.zeros((10, 10, 3))), ("vanilla", np.ones((10, 10))), ("guided", np.eye(10))]
    V.comparison_figure(panels, tmp_path / "cmp.png", title="test")
    with Image.open(tmp_path / "cmp.png") as im:
        w, h = im.size
    assert w == 900 and h > 300
