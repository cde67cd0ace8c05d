"""Train the small CNN that ships as ``minigbp.zoo.digits()``.

    python examples/train_digits.py            # writes minigbp/data/digits.npz and digits_test.npz

Data: scikit-learn's bundled 8x8 handwritten digits (``sklearn.datasets.load_digits``,
1797 images, no download), split once into a stratified 80% training set and a 20%
held-out test set (``random_state=0``). Every image goes through
``minigbp.zoo.digits_preprocess`` (scale 0..16 to [0, 1], bilinear 4x upsampling to
32x32), the same function users call at inference, so training and inference inputs
are identical.

Model: ``minigbp.zoo.digits(pretrained=False)``'s architecture written in torch with
the same module names (``features``, ``flatten``, ``classifier``), so the state dict
converts to minigbp without renaming or transposing. Training: Adam, cross-entropy,
light augmentation (random shifts of up to 3 pixels of the 32x32 input, zero fill).

Reproducible: fixed seeds, ``torch.use_deterministic_algorithms(True)``, one thread;
two runs on the same machine write the same weights.

Outputs:
  minigbp/data/digits.npz       ``mg.save(model)``: architecture + float32 weights
  minigbp/data/digits_test.npz  ``images`` (N, 8, 8) uint8 raw 0..16, ``labels`` (N,) int64

The held-out accuracy is measured with minigbp's own forward pass on the reloaded
file and must be at least 0.97 (the script fails otherwise).

Requires torch and scikit-learn (training-time only; minigbp itself needs neither).
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy/torch start their thread pools

import argparse  # noqa: E402
import sys  # noqa: E402
from collections import OrderedDict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import minigbp as mg  # noqa: E402

SEED = 0
MIN_ACCURACY = 0.97


def torch_digits():
    """``mg.zoo.digits(pretrained=False)``'s architecture in torch, same names."""
    return nn.Sequential(OrderedDict(
        features=nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        ),
        flatten=nn.Flatten(),
        classifier=nn.Sequential(nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10)),
    ))


def random_shift(x, max_shift, gen):
    """Shift each image of ``x`` (N, 1, H, W) by its own random (dy, dx), zero fill."""
    n, _, h, w = x.shape
    p = max_shift
    padded = nn.functional.pad(x, (p, p, p, p))
    offsets = torch.randint(0, 2 * p + 1, (n, 2), generator=gen)
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])


def train(x_train, y_train, epochs, batch_size, lr, max_shift):
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    net = torch_digits()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    x_train, y_train = torch.from_numpy(x_train), torch.from_numpy(y_train)
    n = len(x_train)
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(n, generator=gen)
        total, correct = 0.0, 0
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            xb, yb = random_shift(x_train[idx], max_shift, gen), y_train[idx]
            logits = net(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            correct += (logits.argmax(1) == yb).sum().item()
        sched.step()
        if epoch % 5 == 4 or epoch == epochs - 1:
            print(f"epoch {epoch + 1:3d}  loss {total / n:.4f}  train accuracy (augmented) {correct / n:.4f}")
    return net.eval()


def to_minigbp(net):
    """Copy the torch weights into a minigbp model of the same architecture (float32)."""
    model = mg.zoo.digits(pretrained=False)
    model.load_state_dict({k: v.detach().numpy().astype(np.float32) for k, v in net.state_dict().items()})
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--max-shift", type=int, default=3, help="pixels of the 32x32 input")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "minigbp" / "data")
    args = parser.parse_args(argv)

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    np.random.seed(SEED)

    digits = load_digits()
    images = digits.images.astype(np.uint8)  # raw 0..16, exact
    labels = digits.target.astype(np.int64)
    assert np.array_equal(images, digits.images), "load_digits pixels are not whole numbers 0..16"
    img_train, img_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=SEED)
    print(f"{len(img_train)} training and {len(img_test)} held-out images")

    x_train = mg.zoo.digits_preprocess(img_train)  # (N, 1, 32, 32) float32: the inference path
    net = train(x_train, y_train, args.epochs, args.batch_size, args.lr, args.max_shift)
    with torch.no_grad():
        torch_acc = (net(torch.from_numpy(mg.zoo.digits_preprocess(img_test))).argmax(1).numpy()
                     == y_test).mean()

    args.out_dir.mkdir(parents=True, exist_ok=True)
    model_path, test_path = args.out_dir / "digits.npz", args.out_dir / "digits_test.npz"
    mg.save(to_minigbp(net), model_path)
    with open(test_path, "wb") as f:
        np.savez(f, images=img_test, labels=y_test)

    # measure with minigbp alone, from the files just written
    model = mg.load(model_path)
    with np.load(test_path, allow_pickle=False) as npz:
        images_t, labels_t = npz["images"], npz["labels"]
    logits = model(mg.zoo.digits_preprocess(images_t))
    accuracy = float((logits.argmax(1) == labels_t).mean())
    n_params = sum(a.size for a in model.state_dict().values())
    print(f"torch held-out accuracy   {torch_acc:.4f}")
    print(f"minigbp held-out accuracy {accuracy:.4f} ({int(round(accuracy * len(labels_t)))}/{len(labels_t)})")
    print(f"{model_path}: {n_params} parameters, {model_path.stat().st_size} bytes")
    print(f"{test_path}: {test_path.stat().st_size} bytes")
    assert accuracy >= MIN_ACCURACY, f"held-out accuracy {accuracy:.4f} < {MIN_ACCURACY}"
    return 0


if __name__ == "__main__":
    sys.exit(main())
