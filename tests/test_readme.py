"""The README's ```python blocks run as written, in order (with ``weights`` supplied), and do
what they say. (```py blocks need files a user downloads, so they are not run.)"""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_blocks_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks may write files
    blocks = python_blocks()
    assert len(blocks) >= 3
    rng = np.random.default_rng(0)
    shapes = {"0.weight": (8, 3, 3, 3), "0.bias": (8,), "4.weight": (10, 8 * 16 * 16), "4.bias": (10,)}
    weights = {k: (0.1 * rng.standard_normal(s)).astype(np.float32) for k, s in shapes.items()}
    ns = {"weights": weights}
    exec(compile(blocks[0], str(README), "exec"), ns)
    model, x = ns["model"], ns["x"]
    # the quick start's promises: weights loaded, shapes and dtypes kept
    assert all(np.array_equal(model.state_dict()[k], v) for k, v in weights.items())
    assert ns["logits"].shape == (4, 10) and ns["logits"].dtype == np.float32
    assert ns["g"].shape == x.shape and ns["g"].dtype == x.dtype
    exec(compile(blocks[1], str(README), "exec"), ns)
    assert set(ns["grads"]) == {"0.weight", "0.bias", "4.weight", "4.bias"}
    assert ns["dx"].shape == x.shape
    for block in blocks[2:]:
        exec(compile(block, str(README), "exec"), ns)
    assert (tmp_path / "guided_smooth.png").exists()
    assert set(ns["errors"]) == {"x", "weight", "bias"} and max(ns["errors"].values()) < 1e-6
