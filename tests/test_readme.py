"""Every ```python block of the README and of docs/*.md runs as written, in order, one namespace
per file, and does what the text says. (```py blocks need files a user downloads, so they are
not run.)"""

import pathlib
import re

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


def python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def run_page(path):
    ns = {}
    for block in python_blocks(path):
        exec(compile(block, str(path), "exec"), ns)
    return ns


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks may write files


def test_every_page_with_code_has_blocks():
    assert len(python_blocks(ROOT / "README.md")) >= 3
    assert all(python_blocks(ROOT / "docs" / f"{page}.md") for page in ("layers", "weights", "explain",
                                                                         "conventions", "verify", "course"))


def test_readme_does_what_it_says():
    ns = run_page(ROOT / "README.md")
    x, g = ns["x"], ns["g"]
    assert x.shape == (4, 1, 32, 32) and ns["logits"].shape == (4, 10)
    assert g.shape == x.shape and g.dtype == np.float32 and np.abs(g).max() > 0
    assert ns["gr"].shape == ns["xr"].shape and ns["cam"].shape == (4, 1, 32, 32)


@pytest.mark.parametrize("page", [p for p in PAGES if p.name != "README.md"], ids=lambda p: p.name)
def test_docs_blocks_run(page, tmp_path):
    ns = run_page(page)
    if page.name == "layers.md":
        assert set(ns["errors"]) == {"x", "weight", "bias"} and max(ns["errors"].values()) < 1e-6
        assert ns["dx"].shape == ns["x"].shape and set(ns["grads"]) == {"0.weight", "0.bias", "4.weight", "4.bias"}
        assert ns["gb"].shape == ns["xb"].shape and ns["gr"].shape == ns["xr"].shape
        assert [n.name for n in ns["small"].nodes][:3] == ["conv.pad", "conv.conv", "conv.relu"]
        assert ns["gk"].shape == (2, 3, 32, 32) and np.abs(ns["gk"]).max() > 0
    if page.name == "explain.md":
        assert (tmp_path / "guided_smooth.png").exists()
    if page.name == "course.md":
        assert ns["message"].startswith("1 of 5 properties failed: in-place\n")
        assert "modified its argument `dout` in place" in ns["message"]
    if page.name == "conventions.md":
        assert (tmp_path / "digits_guided.trace.npz").exists()


def bash_blocks(text):
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_starts_with_the_users_install_and_ci_runs_its_test_commands():
    readme = (ROOT / "README.md").read_text()
    assert bash_blocks(readme)[0] == "pip install -e ."  # the light install: no TensorFlow, no torch
    assert bash_blocks(readme)[1].startswith("minigbp explain digits:0")
    setup, run = bash_blocks(readme.split("## Testing", 1)[1])[0].splitlines()
    ci = (ROOT / ".ci" / "run").read_text().replace("python -m pip", "pip").splitlines()
    assert setup in ci and run in ci  # .ci/run runs the Testing section's two commands as written
