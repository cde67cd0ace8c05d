"""Time minigbp against PyTorch CPU on the same work: forward + input signal.

    python examples/benchmark.py                 # every case, float32, all cores
    python examples/benchmark.py --threads 1 --dtype float64 --case small
    python examples/benchmark.py --reference     # minigbp's layers on the reference ops

Cases:
  vgg16     VGG16-shaped network (torchvision's layout, random weights), 1x3x224x224, guided mode
  resnet50  ResNet-50 (mg.zoo.resnet50 against torchvision's resnet50, random weights),
            1x3x224x224, guided mode
  small     a small CNN at batch 64, 3x32x32 inputs, guided mode

Each measurement runs in a fresh child process with the same thread count for
NumPy's BLAS and for torch (parameters frozen, only the input needs a gradient;
torch's ReLUs carry the guided rule through a custom autograd function, so both
sides do the same arithmetic). The children alternate minigbp, torch, minigbp,
torch, ...; the printed ratio is the median of the per-round ratios
minigbp/torch, so a machine that drifts in speed affects both sides alike.
Peak memory is the child's maximum resident set size (weights included).

The children inherit the environment, ``GLIBC_TUNABLES`` included (printed in the header):
with glibc's default malloc settings, memory freed between layers goes back to the operating
system and comes back page by page, zeroed, at the next allocation; README's Performance
section measures both sides with malloc keeping it instead.

Beside each ratio: the case's GEMM limit, the time its convolution and linear flops (forward,
and the input signal's backward: twice the forward's) take at NumPy's own sgemm rate measured
in the same run with the same threads, and each side's multiple of it. A side at 1.0x would do
nothing but those matrix products at full speed.

Requires torch, and torchvision for the resnet50 case (test dependencies of minigbp, never
runtime ones).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # this folder's torchvision_compat
from torchvision_compat import import_torchvision  # noqa: E402

VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
SMALL = [32, 32, "M", 64, 64, "M"]
CASES = {
    # name: (conv config, input shape, hidden width, classes, adaptive pool size)
    "vgg16": (VGG16, (1, 3, 224, 224), 4096, 1000, 7),
    "small": (SMALL, (64, 3, 32, 32), 256, 10, 8),
    "resnet50": (None, (1, 3, 224, 224), None, 1000, None),
}


def build_minigbp(case):
    import minigbp as mg

    if case == "resnet50":
        return mg.zoo.resnet50()
    cfg, shape, hidden, classes, pool = CASES[case]
    layers, c = [], shape[1]
    for v in cfg:
        if v == "M":
            layers.append(mg.MaxPool2d(2, 2))
        else:
            layers += [mg.Conv2d(c, v, 3, padding=1), mg.ReLU()]
            c = v
    return mg.Sequential(
        features=mg.Sequential(*layers),
        avgpool=mg.AdaptiveAvgPool2d(pool),
        flatten=mg.Flatten(),
        classifier=mg.Sequential(mg.Linear(c * pool * pool, hidden), mg.ReLU(), mg.Dropout(),
                                 mg.Linear(hidden, hidden), mg.ReLU(), mg.Dropout(),
                                 mg.Linear(hidden, classes)),
    )


def build_torch(case):
    import torch
    from torch import nn

    class GuidedReLUFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clamp(min=0)

        @staticmethod
        def backward(ctx, r):
            (x,) = ctx.saved_tensors
            return r * ((x > 0) & (r > 0))  # R * [x > 0] * [R > 0]

    class GuidedReLU(nn.Module):
        def forward(self, x):
            return GuidedReLUFunction.apply(x)

    if case == "resnet50":  # torchvision's, every nn.ReLU module replaced by the guided one
        model = import_torchvision().models.resnet50().eval()
        for module in list(model.modules()):
            for name, child in module.named_children():
                if isinstance(child, nn.ReLU):
                    setattr(module, name, GuidedReLU())
        for p in model.parameters():
            p.requires_grad_(False)
        return model
    cfg, shape, hidden, classes, pool = CASES[case]
    layers, c = [], shape[1]
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), GuidedReLU()]
            c = v
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(pool), nn.Flatten(),
                          nn.Linear(c * pool * pool, hidden), GuidedReLU(), nn.Dropout(),
                          nn.Linear(hidden, hidden), GuidedReLU(), nn.Dropout(),
                          nn.Linear(hidden, classes)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def child(framework, case, dtype, repeats, reference=False):
    """Run in a fresh process: time ``repeats`` passes after one warm-up, print JSON."""
    import resource

    import numpy as np

    shape = CASES[case][1]
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    if framework == "minigbp":
        import minigbp as mg

        model = build_minigbp(case)

        def run():
            if reference:  # the plain vectorized ops of minigbp.ops, not minigbp.fast's
                with mg.fast.reference():
                    return mg.backprop(model, x, target=1, mode="guided")
            return mg.backprop(model, x, target=1, mode="guided")
    else:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
        model = build_torch(case).to(getattr(torch, dtype))
        xt = torch.from_numpy(x)

        def run():
            xi = xt.clone().requires_grad_(True)
            out = model(xi)
            out[:, 1].sum().backward()
            return xi.grad

    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"median_s": statistics.median(times), "min_s": min(times), "peak_mb": peak_mb}))


def case_flops(case):
    """Multiply-adds x 2 of the case's convolutions and linear layers, forward plus the input
    signal's backward (the same products read the other way: twice the forward's)."""
    import numpy as np

    import minigbp as mg

    model = build_minigbp(case)
    x = np.zeros((1,) + CASES[case][1][1:], np.float32)
    _, tape = model.forward(x)
    flops = 0
    for (name, layer, cache), (shape, _) in zip(tape, tape.outputs):
        if isinstance(layer, mg.Conv2d):
            F, Cg, HH, WW = layer.weight.shape
            flops += 2 * F * Cg * HH * WW * shape[2] * shape[3]
        elif isinstance(layer, mg.Linear):
            flops += 2 * layer.weight.size
    return 2 * flops * CASES[case][1][0]


def gemm_child(dtype, repeats):
    """Run in a fresh process: NumPy's matrix product rate in GFLOP/s (best of ``repeats``)."""
    import numpy as np

    n = 2048
    a, b = (np.random.default_rng(i).standard_normal((n, n)).astype(dtype) for i in (0, 1))
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    print(json.dumps({"gflops": 2 * n ** 3 / best / 1e9}))


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(framework, case, dtype, threads, repeats, reference=False):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    cmd = [sys.executable, __file__, "--child", framework, "--case", case, "--dtype", dtype,
           "--repeats", str(repeats)] + (["--reference"] if reference else [])
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{framework} {case} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=sorted(CASES), action="append", help="default: all cases")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=3, help="alternating minigbp/torch rounds")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes per child process")
    ap.add_argument("--reference", action="store_true",
                    help="run minigbp's layers on the reference ops (mg.fast.reference())")
    ap.add_argument("--child", choices=["minigbp", "torch", "gemm", "flops"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "gemm":
        gemm_child(args.dtype, args.repeats)
        return
    if args.child == "flops":  # in a child too: a big model built here would raise every later child's peak
        print(json.dumps({"flops": case_flops(args.case[0])}))  # memory (Linux keeps ru_maxrss across fork)
        return
    if args.child:
        child(args.child, args.case[0], args.dtype, args.repeats, args.reference)
        return
    rate = measure("gemm", "small", args.dtype, args.threads, args.repeats)["gflops"]
    print(f"dtype {args.dtype}, {args.threads} thread(s), {args.rounds} rounds x {args.repeats} passes; "
          f"NumPy matrix product: {rate:.1f} GFLOP/s; GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}"
          + ("; minigbp on the reference ops" if args.reference else ""))
    print(f"{'case':9} {'minigbp s':>10} {'torch s':>10} {'ratio':>7} {'GEMM limit s':>13} {'minigbp x':>10} "
          f"{'torch x':>8} {'minigbp MB':>11} {'torch MB':>9}")
    for case in args.case or sorted(CASES, reverse=True):
        rows = []
        for _ in range(args.rounds):
            a = measure("minigbp", case, args.dtype, args.threads, args.repeats, args.reference)
            b = measure("torch", case, args.dtype, args.threads, args.repeats)
            rows.append((a, b, a["median_s"] / b["median_s"]))
        ratio = statistics.median(r[2] for r in rows)
        ta = statistics.median(r[0]["median_s"] for r in rows)
        tb = statistics.median(r[1]["median_s"] for r in rows)
        ma = max(r[0]["peak_mb"] for r in rows)
        mb = max(r[1]["peak_mb"] for r in rows)
        limit = measure("flops", case, args.dtype, args.threads, 1)["flops"] / (rate * 1e9)
        print(f"{case:9} {ta:10.3f} {tb:10.3f} {ratio:7.2f} {limit:13.3f} {ta / limit:10.2f} {tb / limit:8.2f} "
              f"{ma:11.0f} {mb:9.0f}", flush=True)


if __name__ == "__main__":
    main()
