"""Images in and out: loading with Pillow, resizing, and the preprocessings.

A *preprocessing* turns an RGB image (H, W, 3) uint8 into the network's input
(1, C, H', W') float32 and back. Each preprocessing is an exact affine map, so its
inverse (``deprocess``) recovers the resized image up to float rounding:

============  ===========================================================  ============
name          input = f(image)                                             used by
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
    "load_image", "resize", "center_crop", "bilinear_matrix", "bilinear_resize", "nearest_resize",
    "Preprocessing", "PREPROCESSINGS", "get_preprocessing", "keras_vgg_preprocess", "keras_vgg_deprocess",
    "digits_preprocess", "IMAGENET_BGR_MEAN", "DIGITS_SIZE",
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


def resize(image, size, max_pixels=50_000_000):
    """Resize an uint8 image with Pillow's bilinear filter (antialiased, as torchvision's PIL path).

    ``size``: ``(height, width)``, or an int: the shorter side becomes ``size``
    and the aspect ratio is kept (torchvision's ``Resize(int)``). A result of more than
    ``max_pixels`` pixels (an extreme aspect ratio: 1x100000 pixels with the shorter side
    made 256 would be 256x25600000) is refused with a ValueError before any work.
    """
    from PIL import Image

    image = _check_image(image, "resize")
    h, w = image.shape[:2]
    if isinstance(size, (int, np.integer)):
        if h <= w:
            size = (int(size), int(size * w / h))
        else:
            size = (int(size * h / w), int(size))
    if size[0] * size[1] > max_pixels:
        raise ValueError(f"resizing the {h}x{w} image to {size[0]}x{size[1]} would make more than "
                         f"{max_pixels} pixels; crop it to a less extreme aspect ratio first")
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


def nearest_resize(a, size):
    """Resize the last two axes of ``a`` to ``size = (h, w)`` by nearest neighbour.

    Output row ``i`` copies input row ``min(floor(i * H / h), H - 1)`` (and likewise
    columns): ``torch.nn.functional.interpolate(a, size, mode="nearest")``, which Captum's
    ``LayerAttribution.interpolate`` uses by default.
    """
    a = np.asarray(a)
    rows = np.minimum(np.floor(np.arange(size[0]) * (a.shape[-2] / size[0])).astype(int), a.shape[-2] - 1)
    cols = np.minimum(np.floor(np.arange(size[1]) * (a.shape[-1] / size[1])).astype(int), a.shape[-1] - 1)
    return a[..., rows[:, None], cols[None, :]]


IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)  # Keras/Caffe VGG, BGR order, 0..255 scale

DIGITS_SIZE = 32  # side of the digits model's input: the 8x8 digits are upsampled 4x


def keras_vgg_preprocess(images, dtype=np.float32):
    """Keras's VGG16/VGG19 input preprocessing, returned channels-first for minigbp.

    Exactly ``keras.applications.vgg16.preprocess_input(images)`` (mode ``"caffe"``:
    RGB -> BGR, subtract the ImageNet means ``[103.939, 116.779, 123.68]`` per BGR channel,
    no scaling) followed by ``NHWC -> NCHW``.

    Parameters
    ----------
    images : array_like (N, H, W, 3) or (H, W, 3)
        RGB images, values 0..255 (uint8 or any real dtype). Never modified.
    dtype : float32 (default) or float64
        The result's dtype. Integer images are converted to it before the subtraction (as
        Keras converts them to float32); float images are processed in their own dtype, as
        Keras does, then converted.

    Returns
    -------
    ndarray (N, 3, H, W) or (3, H, W), ``dtype``
        Channels in **BGR** order.
    """
    x = np.asarray(images)
    if x.dtype.kind not in "iuf":
        raise TypeError(f"keras_vgg_preprocess: expected real-valued images, got dtype {x.dtype}")
    if x.ndim not in (3, 4) or x.shape[-1] != 3:
        raise ValueError(f"keras_vgg_preprocess: expected RGB images (N, H, W, 3) or (H, W, 3), "
                         f"got shape {x.shape}")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"keras_vgg_preprocess: dtype must be float32 or float64, got {dtype}")
    work = x.dtype if x.dtype.kind == "f" else dtype
    out = x.astype(work)[..., ::-1] - np.asarray(IMAGENET_BGR_MEAN, dtype=work)
    return np.ascontiguousarray(np.moveaxis(out, -1, -3), dtype=dtype)


def keras_vgg_deprocess(x, add_mean=True, to_uint8=False):
    """Inverse of :func:`keras_vgg_preprocess`, for display: NCHW BGR -> NHWC RGB.

    Parameters
    ----------
    x : array_like (N, 3, H, W) or (3, H, W)
        A preprocessed batch (BGR, means subtracted), or a signal at the input such as
        :func:`minigbp.backprop`'s result (then pass ``add_mean=False``: a gradient has no
        mean to restore, only the channel order and layout to undo).
    add_mean : bool
        Add the ImageNet means back.
    to_uint8 : bool
        Round and clip to 0..255 and return uint8.

    Returns
    -------
    ndarray (N, H, W, 3) or (H, W, 3)
        RGB; ``x``'s float dtype (float32 for other inputs), or uint8.
    """
    x = np.asarray(x)
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"keras_vgg_deprocess: expected (N, 3, H, W) or (3, H, W), got shape {x.shape}")
    dt = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float32)
    y = np.moveaxis(x.astype(dt), -3, -1)
    if add_mean:
        y = y + np.asarray(IMAGENET_BGR_MEAN, dtype=dt)
    y = np.ascontiguousarray(y[..., ::-1])
    if to_uint8:
        return np.clip(np.rint(y), 0, 255).astype(np.uint8)
    return y


def digits_preprocess(images):
    """Turn raw 8x8 digits (values 0..16) into the :func:`digits` model's input.

    Parameters
    ----------
    images : array_like (N, 8, 8) or (8, 8), any real numeric dtype
        Pixel values in 0..16, as ``sklearn.datasets.load_digits().images`` and
        :func:`digits_test_data` give them.

    Returns
    -------
    ndarray (N, 1, 32, 32) float32
        (``N = 1`` for a single ``(8, 8)`` image.)

    Raises
    ------
    ValueError
        ``images`` is not shaped ``(N, 8, 8)`` or ``(8, 8)``, or holds values outside
        [0, 16] (or NaN).
    TypeError
        ``images`` is not real-valued numbers (bool, complex, strings, objects).

    Notes
    -----
    Each image is scaled to [0, 1] and upsampled 4x by bilinear interpolation with
    ``align_corners=False`` (what ``torch.nn.functional.interpolate(x, size=(32, 32),
    mode="bilinear", align_corners=False)`` computes), written as one matrix product:

    .. math:: \\mathrm{out} = A \\, (\\mathrm{img} / 16) \\, A^T

    where ``A`` is the ``(32, 8)`` 1-D interpolation matrix of
    :func:`minigbp.image.bilinear_matrix`: row ``i`` samples the input at
    ``s_i = max((i + 1/2) / 4 - 1/2, 0)`` and holds ``1 - (s_i - floor(s_i))`` at column
    ``floor(s_i)`` and ``s_i - floor(s_i)`` at column ``min(floor(s_i) + 1, 7)``. Bilinear
    interpolation is separable, so interpolating the rows (``A @ img``) and then the
    columns (``@ A.T``) is the 2-D operation. The training script
    (``examples/train_digits.py``) calls this very function, so training and inference
    see identical inputs.
    """
    x = np.asarray(images)
    if x.dtype.kind not in "iuf":
        raise TypeError(f"digits_preprocess: expected real numbers (pixel values 0..16), "
                        f"got dtype {x.dtype}")
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1:] != (8, 8):
        raise ValueError(f"digits_preprocess: expected images of shape (N, 8, 8) or (8, 8), "
                         f"got shape {np.shape(images)}")
    x = x.astype(np.float64)
    bad = ~((x >= 0) & (x <= 16))  # NaN is bad too
    if bad.any():
        raise ValueError(f"digits_preprocess: pixel values must lie in [0, 16] (raw load_digits "
                         f"values); got {x[bad][0]} (and {bad.sum() - 1} more outside)")
    a = bilinear_matrix(8, DIGITS_SIZE)  # (32, 8)
    out = a @ (x / 16.0) @ a.T  # (32, 8) @ (N, 8, 8) @ (8, 32) -> (N, 32, 32)
    return out[:, None].astype(np.float32)


class Preprocessing:
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
        return f"Preprocessing({self.name!r}: {self.description})"


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
    return keras_vgg_preprocess(img)


def _caffe_from(x):
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
    return digits_preprocess(gray * (16.0 / 255.0))[0]  # the data set's 0..16 scale


def _digits_from(x):
    return np.repeat(x.transpose(1, 2, 0), 3, axis=2)


PREPROCESSINGS = {
    "imagenet": Preprocessing("imagenet", _imagenet_prepare, _imagenet_to, _imagenet_from,
                       "torchvision ImageNet: RGB, resize 256, center crop 224, (v/255 - mean)/std"),
    "caffe": Preprocessing("caffe", _caffe_prepare, _caffe_to, _caffe_from,
                    "Keras/Caffe VGG: BGR, resize 224x224, v - mean (103.939, 116.779, 123.68)"),
    "digits": Preprocessing("digits", _digits_prepare, _digits_to, _digits_from,
                     "digits model: grayscale ink-bright 8x8 on 0..1, bilinear upsampled to 32x32"),
}


def get_preprocessing(name):
    """A preprocessing by name (``"imagenet"``, ``"caffe"``, ``"digits"``)."""
    try:
        return PREPROCESSINGS[name]
    except KeyError:
        raise ValueError(f"unknown preprocessing {name!r}; known: {', '.join(PREPROCESSINGS)}") from None
