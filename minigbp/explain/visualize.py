"""Display post-processing and figures. Tests compare raw signals; only pictures come here.

Normalizations (per sample, to [0, 1]):

* ``"minmax"``     -- ``(a - min) / (max - min)``, as most guided-backprop tutorials do;
* ``"symmetric"``  -- ``0.5 + a / (2 max|a|)``: zero is mid-gray, sign is visible;
* ``"percentile"`` -- ``clip(a / q, -1, 1)`` mapped like "symmetric", with ``q`` the
  ``p``-th percentile of ``|a|`` (default 99): a few huge values no longer wash out
  the picture.

``magnitude(signal)`` is ``max_c |signal[c]|`` (Simonyan et al.'s saliency map).

:func:`postprocess` names the post-processings libraries apply to the raw signal
before anyone sees it, so their outputs can be compared with minigbp's.
"""

import os

import numpy as np

__all__ = ["magnitude", "normalize", "postprocess", "POSTPROCESSINGS", "to_display", "overlay", "save_png", "comparison_figure", "NORMALIZATIONS"]

NORMALIZATIONS = ("minmax", "symmetric", "percentile")


def magnitude(signal):
    """``max_c |signal[..., c, :, :]|``: (C, H, W) -> (H, W), (N, C, H, W) -> (N, H, W)."""
    signal = np.asarray(signal)
    return np.abs(signal).max(axis=-3)


POSTPROCESSINGS = {
    "raw": "the signed signal as it is (Captum GuidedBackprop/Deconvolution, zennit, "
           "pytorch-grad-cam, iNNvestigate)",
    "abs": "|signal| (Captum Saliency's default abs=True)",
    "max-abs": "max over channels of |signal|, (N, 1, H, W) (TorchRay; Simonyan et al.)",
    "abs-max-minmax": "max over channels of |signal|, then per-sample min-max to [0, 1], "
                      "(N, 1, H, W) (tf-keras-vis Saliency)",
    "sum-abs-p99": "g = sum over channels of |signal|, then clip((g - min g) / (p99(g) - min g), 0, 1) "
                   "per sample, (N, 1, H, W) (utkuozbulak's convert_to_grayscale)",
}


def postprocess(signal, how="raw"):
    """Apply a named post-processing (:data:`POSTPROCESSINGS`) to signals (N, C, H, W).

    The channel-reducing ones keep a channel axis of 1 so the result is still 4-D.
    Returns a new array in the signal's dtype.
    """
    s = np.asarray(signal)
    if how not in POSTPROCESSINGS:
        raise ValueError(f"unknown post-processing {how!r}; expected one of {', '.join(POSTPROCESSINGS)}")
    if s.ndim != 4:
        raise ValueError(f"postprocess: expected signals (N, C, H, W), got shape {s.shape}")
    if how == "raw":
        return s.copy()
    if how == "abs":
        return np.abs(s)
    if how == "max-abs":
        return np.abs(s).max(axis=1, keepdims=True)
    if how == "abs-max-minmax":
        m = np.abs(s).max(axis=1, keepdims=True)
        lo = m.min(axis=(1, 2, 3), keepdims=True)
        hi = m.max(axis=(1, 2, 3), keepdims=True)
        return ((m - lo) / np.where(hi > lo, hi - lo, 1)).astype(s.dtype)
    g = np.abs(s).sum(axis=1, keepdims=True)  # sum-abs-p99
    hi = np.percentile(g.reshape(len(g), -1), 99, axis=1).reshape(-1, 1, 1, 1)
    lo = g.min(axis=(1, 2, 3), keepdims=True)
    return np.clip((g - lo) / np.where(hi > lo, hi - lo, 1), 0, 1).astype(s.dtype)


def normalize(a, how="minmax", percentile=99.0):
    """Map an array (one sample) to [0, 1] for display; see the module docstring."""
    a = np.asarray(a, dtype=np.float64)
    if how == "minmax":
        lo, hi = a.min(), a.max()
        return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    if how == "symmetric":
        m = np.abs(a).max()
        return 0.5 + a / (2 * m) if m > 0 else np.full_like(a, 0.5)
    if how == "percentile":
        q = np.percentile(np.abs(a), percentile)
        if q <= 0:
            q = np.abs(a).max()
        return 0.5 + np.clip(a / q, -1, 1) / 2 if q > 0 else np.full_like(a, 0.5)
    raise ValueError(f"unknown normalization {how!r}; expected one of {', '.join(NORMALIZATIONS)}")


def to_display(signal, how="minmax", gray=False, channels_bgr=False):
    """One sample's signal (C, H, W) -> an image in [0, 1]: (H, W, 3) color or (H, W) gray.

    ``gray`` shows :func:`magnitude` (normalized with "minmax" when ``how`` is "minmax",
    else divided by its ``how``-scale); ``channels_bgr`` flips BGR inputs (Caffe presets)
    back to RGB for display.
    """
    signal = np.asarray(signal, dtype=np.float64)
    if signal.ndim != 3:
        raise ValueError(f"to_display: expected one sample (C, H, W), got shape {signal.shape}")
    if gray or signal.shape[0] == 1:
        m = magnitude(signal) if gray else signal[0]
        if gray and how != "minmax":
            return np.clip(2 * normalize(m, how) - 1, 0, 1)  # magnitudes are >= 0: use the upper half
        return normalize(m, how)
    img = normalize(signal, how).transpose(1, 2, 0)
    return img[:, :, ::-1] if channels_bgr else img


def overlay(image, heat, alpha=0.5, cmap="jet"):
    """Blend a heat map (H, W) in [0, 1] over an RGB image (H, W, 3) in [0, 1]."""
    from matplotlib import colormaps

    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    colored = colormaps[cmap](np.clip(heat, 0, 1))[:, :, :3]
    return (1 - alpha) * image + alpha * colored


def save_png(image, path, scale=1):
    """Write an image in [0, 1] ((H, W) or (H, W, 3)) as PNG, optionally enlarged by pixel repetition."""
    from PIL import Image

    arr = np.clip(np.asarray(image, dtype=np.float64), 0, 1)
    if scale > 1:
        arr = arr.repeat(scale, axis=0).repeat(scale, axis=1)
    Image.fromarray(np.round(arr * 255).astype(np.uint8)).save(os.fspath(path))


def comparison_figure(panels, path, title=None, panel_size=3.0):
    """Save a row of titled panels, e.g. input | vanilla | deconvnet | guided.

    ``panels``: list of ``(title, image)`` with images in [0, 1] ((H, W) or (H, W, 3)).
    Uses matplotlib's object API (no global pyplot state), so it is thread-safe.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel_size * len(panels), panel_size + (0.5 if title else 0.2)))
    FigureCanvasAgg(fig)
    for i, (name, img) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        img = np.clip(np.asarray(img, dtype=np.float64), 0, 1)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name, fontsize=11)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=100)
    return path
