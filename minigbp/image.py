"""Images in and out: loading with Pillow, resizing, and the preprocessing presets.

A *preset* turns an RGB image (H, W, 3) uint8 into the network's input
(1, C, H', W') float32 and back. Each preprocessing is an exact affine map, so its
inverse (``deprocess``) recovers the resized image up to float rounding:

============  ===========================================================  ============
preset        input = f(image)                                             used by
============  ===========================================================  ============
imagenet      RGB, ``(v / 255 - mean) / std``, mean (0.485, 0.456, 0.406),  torchvision
              std (0.229, 0.224, 0.225); resize shorter side 256, center
              crop 224
caffe         BGR, ``v - mean``, mean (103.939, 116.779, 123.68) in BGR      Keras/Caffe VGG
              order, values 0..255; resize to 224x224                      (``preprocess_input``)
digits        grayscale (ink bright), resized to 8x8, scaled to 0..16,     ``zoo.digits()``
              bilinear upsampled to 32x32, ``/ 16``
============  ===========================================================  ============
"""

import os
import warnings

import numpy as np

__all__ = [
    "load_image", "resize", "center_crop", "bilinear_matrix", "bilinear_resize",
    "Preset", "PRESETS", "get_preset",
]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


def load_image(path, max_pixels=50_000_000):
    """Read an image file as RGB uint8 (H, W, 3). Grayscale/palette/alpha images are converted.

    Raises ``ValueError`` naming the file for unreadable files and for images over
    ``max_pixels`` pixels (decompression bombs), ``FileNotFoundError`` if missing.
    """
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ValueError(f"{path}: image of {w}x{h} pixels is larger than the "
                                     f"limit of {max_pixels} pixels (possible decompression bomb)")
                return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(f"{path}: refused as a possible decompression bomb: {e}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from None


def _check_image(image, owner):
    image = np.asarray(image)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"{owner}: expected an image (H, W) or (H, W, 3), got shape {image.shape}")
    return image


def resize(image, size):
    """Resize an uint8 image with Pillow's bilinear filter (antialiased, as torchvision's PIL path).

    ``size``: ``(height, width)``, or an int: the shorter side becomes ``size``
    and the aspect ratio is kept (torchvision's ``Resize(int)``).
    """
    from PIL import Image

    image = _check_image(image, "resize")
    h, w = image.shape[:2]
    if isinstance(size, (int, np.integer)):
        if h <= w:
            size = (int(size), int(size * w / h))
        else:
            size = (int(size * h / w), int(size))
    pil = Image.fromarray(np.ascontiguousarray(image.astype(np.uint8)))
    return np.asarray(pil.resize((size[1], size[0]), Image.BILINEAR))


def center_crop(image, size):
    """The central ``size x size`` (or ``(h, w)``) part of an image, torchvision's rounding."""
    image = _check_image(image, "center_crop")
    th, tw = (size, size) if isinstance(size, (int, np.integer)) else size
    h, w = image.shape[:2]
    if th > h or tw > w:
        raise ValueError(f"center_crop: crop {(th, tw)} larger than image {(h, w)}")
    top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    return image[top:top + th, left:left + tw]


def bilinear_matrix(n_in, n_out):
    """The (n_out, n_in) matrix of 1-D bilinear interpolation, PyTorch's ``align_corners=False``.

    Output sample ``i`` sits at input coordinate ``s = (i + 0.5) * n_in / n_out - 0.5``,
    clamped at 0; it mixes inputs ``floor(s)`` and ``floor(s) + 1`` (clamped to the
    last index) with weights ``1 - (s - floor(s))`` and ``s - floor(s)``.
    Resizing a 2-D array ``a`` is then ``A_h @ a @ A_w.T``.
    """
    A = np.zeros((n_out, n_in))
    for i in range(n_out):
        s = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(np.floor(s)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        lam = s - i0
        A[i, i0] += 1 - lam
        A[i, i1] += lam
    return A


def bilinear_resize(a, size):
    """Resize the last two axes of ``a`` to ``size = (h, w)`` with :func:`bilinear_matrix`.

    Equals ``torch.nn.functional.interpolate(a, size, mode="bilinear",
    align_corners=False)``; float32/float64 are kept, other dtypes give float64.
    """
    a = np.asarray(a)
    dtype = a.dtype if a.dtype in (np.float32, np.float64) else np.float64
    Ah = bilinear_matrix(a.shape[-2], size[0]).astype(dtype)
    Aw = bilinear_matrix(a.shape[-1], size[1]).astype(dtype)
    return Ah @ a @ Aw.T


class Preset:
    """A preprocessing: ``preprocess(image) -> (1, C, H, W) float32`` and its exact inverse.

    ``prepare(image)`` does the geometric part (resize, crop, color) and returns the
    image the network sees (uint8 RGB; for "digits" a float 8x8 gray image on 0..255); ``to_input`` and ``from_input`` are the affine
    value maps between that image and the network's input.
    """

    def __init__(self, name, prepare, to_input, from_input, description):
        self.name, self.description = name, description
        self.prepare, self.to_input, self.from_input = prepare, to_input, from_input

    def preprocess(self, image):
        """RGB image (H, W, 3) or grayscale (H, W), uint8 -> network input (1, C, H', W') float32."""
        return self.to_input(self.prepare(_check_image(image, self.name)))[None]

    def deprocess(self, x):
        """Network input (C, H', W') or (1, C, H', W') -> the image it came from, float RGB in [0, 1]."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 4:
            if x.shape[0] != 1:
                raise ValueError(f"{self.name}: deprocess takes one input, got batch of {x.shape[0]}")
            x = x[0]
        return np.clip(self.from_input(x), 0.0, 1.0)

    def __repr__(self):
        return f"Preset({self.name!r}: {self.description})"


def _rgb(image):
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return image[:, :, :3]


def _imagenet_prepare(image):
    return center_crop(resize(_rgb(image), 256), 224)


def _imagenet_to(img):
    v = img.astype(np.float64) / 255.0
    return ((v - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).astype(np.float32)


def _imagenet_from(x):
    return (x.transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN)


def _caffe_prepare(image):
    return resize(_rgb(image), (224, 224))


def _caffe_to(img):
    from .keras import keras_vgg_preprocess

    return keras_vgg_preprocess(img)


def _caffe_from(x):
    from .keras import keras_vgg_deprocess

    return keras_vgg_deprocess(x) / 255.0


def _digits_prepare(image):
    image = np.asarray(image)
    gray = image if image.ndim == 2 else _rgb(image).astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    gray = np.asarray(gray, dtype=np.float64)
    if gray.shape != (8, 8):
        gray = resize(np.clip(gray, 0, 255).astype(np.uint8), (8, 8)).astype(np.float64)
    if gray.mean() > 127:  # dark ink on light paper: invert so the ink is bright, as in the data set
        gray = 255.0 - gray
    return np.clip(gray, 0, 255)


def _digits_to(gray):
    from .zoo import digits_preprocess

    return digits_preprocess(gray * (16.0 / 255.0))[0]  # the data set's 0..16 scale


def _digits_from(x):
    return np.repeat(x.transpose(1, 2, 0), 3, axis=2)


PRESETS = {
    "imagenet": Preset("imagenet", _imagenet_prepare, _imagenet_to, _imagenet_from,
                       "torchvision ImageNet: RGB, resize 256, center crop 224, (v/255 - mean)/std"),
    "caffe": Preset("caffe", _caffe_prepare, _caffe_to, _caffe_from,
                    "Keras/Caffe VGG: BGR, resize 224x224, v - mean (103.939, 116.779, 123.68)"),
    "digits": Preset("digits", _digits_prepare, _digits_to, _digits_from,
                     "digits model: grayscale ink-bright 8x8 on 0..1, bilinear upsampled to 32x32"),
}


def get_preset(name):
    """A preset by name; ``ValueError`` listing the known ones otherwise."""
    if isinstance(name, Preset):
        return name
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]
