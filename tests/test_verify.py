"""minigbp.verify: the verdicts for published recipes, the per-layer probe, the report,
and the ``minigbp verify`` command's exit codes."""

import json
import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("captum")

import minigbp as mg  # noqa: E402
from minigbp import cli  # noqa: E402
from minigbp.verify import RTOL, Report, check  # noqa: E402
from minigbp.verify.report import Divergence  # noqa: E402

from example_scripts import load_example  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "verify_recipes.py"


R = load_example("verify_recipes.py", "verify_recipes_under_test")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The models here are tiny: one thread is faster, and immune to a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def example_run():
    """The example script's table, run once: ``(printed text, [(recipe, expected, report), ...])``;
    every recipe checked against the mode it claims."""
    import contextlib
    import io
    import warnings

    pytest.importorskip("torchvision")
    pytest.importorskip("zennit")
    printed = io.StringIO()
    tf_rows, R.TF_RECIPES = R.TF_RECIPES, []  # the TensorFlow rows: tests/test_verify_keras.py
    try:
        with contextlib.redirect_stdout(printed), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results = R.run()
    finally:
        R.TF_RECIPES = tf_rows
    return printed.getvalue(), results


def _reports(example_run, factories):
    return {(factory.__name__, fn.__name__): report for (_, factory, fn, _, _), (_, _, report)
            in zip(R.RECIPES, example_run[1]) if factory in factories}


@pytest.fixture(scope="module")
def reports(example_run):
    """The recipes on the small VGG, by function name."""
    return {fn: report for (_, fn), report in _reports(example_run, (R.make_model,)).items()}


def one_hot_grad(model, x, target):
    out = model(x)
    out[torch.arange(len(target)), target].sum().backward()
    return x.grad


# ------------------------------------------------------------------------- verdicts

@pytest.mark.parametrize("fn, verdict", [
    ("captum_guided", "guided"),
    ("captum_deconvolution", "deconvnet"),
    ("captum_saliency", "vanilla"),
    ("hook_recipe", "guided"),
    ("relu_function_ForwardMaskReLU", "vanilla"),
    ("relu_function_GuidedReLU", "guided"),
    ("hook_features_only", "none"),
])
def test_recipe_verdicts(reports, fn, verdict):
    report = reports[fn]
    assert report.verdict == verdict, str(report)
    assert report.matches == (() if verdict == "none" else (verdict,))
    assert report.error is None and report.dtype == "float64"
    for m, e in report.errors.items():
        assert (e.max_rel <= RTOL["float64"]) == (m == verdict)
    # the hard inputs were really used: the integer-weight copy is exact for this model
    assert [i.name for i in report.inputs] == ["integer x", "normal x", "integer weights"]


def test_forward_mask_relu_is_vanilla_not_guided(reports):
    report = reports["relu_function_ForwardMaskReLU"]
    assert report.mode == "guided" and not report.ok
    assert "claimed: guided -> MISMATCH" in str(report)


def test_features_only_hook_is_diagnosed_by_the_probe(reports):
    report = reports["hook_features_only"]
    p = report.probe
    assert p.possible and p.focus == "guided"
    # walking down from the output, guided breaks at the classifier's last ReLU...
    assert p.divergence["guided"] == Divergence("classifier.4", "ReLU")
    # ...vanilla only once the features' ReLUs are reached
    assert p.divergence["vanilla"].layer == "features.6"
    assert p.relus == {"vanilla": ["classifier.1", "classifier.4"],
                          "guided": ["features.1", "features.3", "features.6"]}
    rules = {row.layer: row.rule for row in p.layers}
    assert rules["classifier.0"] == rules["features.0"] == rules["features.7"] == "as in minigbp"
    text = str(report)
    assert "against guided: first diverges at classifier.4 (ReLU), whose local rule is: vanilla" in text
    assert "ReLUs behaving like vanilla: classifier.1, classifier.4; like guided: features.1, features.3" in text


def test_inplace_relus_break_module_hooks_and_the_report_says_so(reports):
    report = reports["hook_recipe"]
    assert report.verdict == "guided"
    broken = check(R.make_model_inplace(), R.hook_recipe, mode="guided")
    assert broken.verdict == "error" and not broken.ok and broken.errors is None
    assert "RuntimeError" in broken.error and "inplace" in broken.error
    assert "attribute_fn failed" in str(broken)


def test_captum_handles_inplace_relus():
    assert check(R.make_model_inplace(), R.captum_guided).verdict == "guided"


def test_relu_gradient_at_zero_is_caught_only_by_the_hard_inputs():
    class GuidedAtZero(torch.autograd.Function):
        """Guided, except that it lets the signal through at x == 0."""

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clamp(min=0)

        @staticmethod
        def backward(ctx, dy):
            (x,) = ctx.saved_tensors
            return dy.clamp(min=0) * (x >= 0)

    report = check(R.make_model(), R._with_relu_function(GuidedAtZero), mode="guided")
    assert report.verdict == "none"
    per_input = report.errors["guided"].per_input
    assert per_input["normal x"].max_rel < 1e-12          # random data never hits x == 0 ...
    assert per_input["integer weights"].max_rel > 0.01    # ... exact integer activations do
    p = report.probe
    assert p.input == "integer weights"
    assert p.divergence["guided"].type == "ReLU"
    assert "guided, except at x == 0" in p.relus  # the `>=` is named for what it is


def test_probe_works_with_inplace_relus():
    def features_only_function(model, x, target):
        relus = [m for m in model.features.modules() if isinstance(m, torch.nn.ReLU)]
        for m in relus:
            m.forward = R.GuidedReLU.apply
        try:
            return one_hot_grad(model, x, target)
        finally:
            for m in relus:
                del m.forward

    report = check(R.make_model_inplace(), features_only_function, mode="guided")
    assert report.verdict == "none"
    assert report.probe.possible
    assert report.probe.divergence["guided"].layer == "classifier.4"
    assert report.probe.relus["vanilla"] == ["classifier.1", "classifier.4"]


# ------------------------------------------------------------------- real architectures

@pytest.fixture(scope="module")
def torchvision_reports(example_run):
    return _reports(example_run, (R.make_resnet18, R.make_densenet121))


@pytest.mark.filterwarnings("ignore:Using a non-full backward hook:FutureWarning")
@pytest.mark.parametrize("factory, fn, verdict", [
    ("make_resnet18", "captum_guided", "guided"),
    ("make_resnet18", "backward_hook_recipe", "guided"),
    ("make_resnet18", "zennit_guided", "guided"),
    ("make_resnet18", "pytorch_grad_cam_guided", "guided"),
    ("make_densenet121", "captum_guided", "none"),
    ("make_densenet121", "backward_hook_recipe", "none"),
])
def test_recipes_on_torchvision_models(torchvision_reports, factory, fn, verdict):
    report = torchvision_reports[(factory, fn)]
    assert report.verdict == verdict, str(report)
    assert [i.name for i in report.inputs] == ["integer x", "normal x", "integer weights"]  # BN made exact
    if verdict == "none":
        # DenseNet: every nn.ReLU module is guided; the F.relu after features.norm5 is not hooked
        p = report.probe
        assert p.possible and p.divergence["guided"] == Divergence("relu", "F.relu")
        assert p.skipped == ["relu"] and p.relus["vanilla"] == ["relu"]
        # 2 per dense layer (58 layers) and 3 transitions act as guided; features.relu0 may fit both
        guided = p.relus["guided"] + p.relus.get("vanilla = guided", [])
        assert len(guided) == 120 and set(p.relus) <= {"guided", "vanilla", "vanilla = guided"}
        text = str(report)
        assert "against guided: first diverges at relu (F.relu), whose local rule is: vanilla" in text
        assert "ReLUs the recipe skipped (vanilla where guided was expected): relu" in text
        assert "more layers below" in text and len(text.splitlines()) < 60
        # what the recipe computes is minigbp's guided mode with functional ReLUs left vanilla
        model = mg.from_torch(R.make_densenet121(), dtype=np.float64)
        x = np.random.default_rng(1).standard_normal((2, 3, 32, 32))
        theirs = getattr(R, fn)(R.make_densenet121().double(), torch.tensor(x, requires_grad=True),
                                torch.tensor([1, 2]))
        ours = mg.backprop(model, x, np.array([1, 2]), "guided", preset="captum")
        assert np.abs(ours - theirs.detach().numpy()).max() <= 1e-9 * np.abs(ours).max()


def test_probe_not_possible_is_reported_gracefully():
    def twice(model, x, target):
        with torch.no_grad():
            model(x)
        return R.hook_features_only(model, x, target)

    report = check(R.make_model(), twice, mode="guided")
    assert report.verdict == "none"
    assert report.probe.possible is False
    assert "ran 2 times" in report.probe.reason
    assert "per-layer probe: not possible" in str(report)


def test_a_softmax_seed_diverges_at_the_output():
    def softmax_grad(model, x, target):
        p = torch.softmax(model(x), dim=1)
        p[torch.arange(len(target)), target].sum().backward()
        return x.grad

    report = check(R.make_model(), softmax_grad, mode="vanilla")
    assert report.verdict == "none"
    assert all(d == Divergence(None, None) for d in report.probe.divergence.values())
    assert "the seed is not a one-hot 1 at the target logit" in str(report)


def test_no_probe_when_asked():
    assert check(R.make_model(), R.hook_features_only, probe=False).probe is None


# --------------------------------------------------------------------- dtypes and inputs

def test_function_refusing_float64_runs_in_the_modules_dtype():
    def float32_only(model, x, target):
        if x.dtype != torch.float32:
            raise TypeError("float32 only")
        return R.captum_guided(model, x, target)

    report = check(R.make_model(), float32_only, mode="guided")
    assert report.verdict == "guided" and report.ok
    assert report.dtype == "float32" and report.rtol == RTOL["float32"]
    assert any("failed in float64 (TypeError: float32 only)" in n for n in report.notes)
    assert report.errors["guided"].max_rel < 1e-5


def test_function_returning_float32_from_float64_gets_the_float32_tolerance():
    def casts(model, x, target):
        model = model.float()
        x = x.detach().float().requires_grad_(True)
        return one_hot_grad(model, x, target)

    report = check(R.make_model(), casts, mode="vanilla")
    assert report.verdict == "vanilla" and report.rtol == RTOL["float32"]


def test_user_inputs_and_targets():
    x = torch.randn(3, 3, 16, 16)
    report = check(R.make_model(), R.captum_guided, inputs=x, targets=torch.tensor([1, 2, 3]), mode="guided")
    assert report.ok and report.inputs[-1].name == "your inputs" and report.inputs[-1].shape == (3, 3, 16, 16)
    assert "your inputs" in report.errors["guided"].per_input


def test_the_users_module_is_not_modified():
    model = R.make_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check(model, R.relu_function_forward_mask, batch=2)
    assert model.training and next(model.parameters()).dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(type(m).forward is m.forward.__func__ for m in model.modules()
               if isinstance(m, torch.nn.ReLU))


def test_function_ignoring_its_model_argument_is_a_usage_error():
    other = R.make_model()
    with pytest.raises(ValueError, match="did not run the model it was given"):
        check(R.make_model(), lambda model, x, target: R.captum_guided(other, x.float(), target))


def test_wrong_output_shape_is_an_error_verdict():
    report = check(R.make_model(), lambda model, x, target: one_hot_grad(model, x, target).sum(1))
    assert report.verdict == "error" and "returned shape (4, 16, 16)" in report.error


def test_ambiguous_when_the_model_has_no_relu():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4, 3))
    report = check(model, one_hot_grad, input_shape=(1, 6, 6), mode="vanilla")
    assert report.verdict == "ambiguous" and report.matches == ("vanilla", "deconvnet", "guided")
    assert report.ok and "give the same maps" in report.notes[-1]


def test_report_table_and_dict(reports):
    report = reports["captum_guided"]
    assert isinstance(report, Report) and report.ok and report.closest == "guided"
    text = str(report)
    for words in ("minigbp verify: captum_guided on SmallVGG", "max abs err", "max rel err",
                  "verdict: guided  (claimed: guided -> OK)"):
        assert words in text
    d = json.loads(json.dumps(reports["hook_features_only"].to_dict()))
    assert d["verdict"] == "none" and d["ok"] is False and d["mode"] == "guided"
    assert set(d["errors"]) == {"vanilla", "deconvnet", "guided"}
    assert d["probe"]["divergence"]["guided"]["layer"] == "classifier.4"


def test_unconvertible_module_is_a_value_error():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.LayerNorm([4, 6, 6]))
    with pytest.raises(ValueError, match=r"'1' \(torch.nn.modules.normalization.LayerNorm\)"):
        check(model, R.captum_guided)


# ------------------------------------------------------------------------------ CLI

SPEC = f"{EXAMPLE}:make_model"


def fn_spec(name):
    return f"{EXAMPLE}:{name}"


@pytest.mark.parametrize("function, mode, status", [
    ("captum_guided", "guided", 0),
    ("hook_recipe", None, 0),                       # --mode defaults to guided
    ("captum_saliency", "vanilla", 0),
    ("relu_function_forward_mask", "guided", 1),
    ("hook_features_only", "guided", 1),
])
def test_cli_exit_status(capsys, function, mode, status):
    argv = ["verify", SPEC, fn_spec(function)] + (["--mode", mode] if mode else [])
    assert cli.main(argv) == status
    out = capsys.readouterr().out
    assert "verdict:" in out and ("OK" if status == 0 else "MISMATCH") in out


def test_cli_error_recipe_exits_1(capsys):
    assert cli.main(["verify", f"{EXAMPLE}:make_model_inplace", fn_spec("hook_recipe")]) == 1
    assert "attribute_fn failed" in capsys.readouterr().out


def test_cli_json(capsys):
    assert cli.main(["verify", SPEC, fn_spec("captum_deconvolution"), "--mode", "deconvnet", "--json",
                     "--no-probe"]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "deconvnet"


def test_cli_dotted_module_from_the_working_directory(capsys, monkeypatch):
    monkeypatch.chdir(EXAMPLE.parent)
    assert cli.main(["verify", "verify_recipes:make_model", "verify_recipes:captum_saliency",
                     "--mode", "vanilla", "--batch", "2"]) == 0


@pytest.mark.parametrize("argv, words", [
    (["verify", SPEC, fn_spec("no_such_function")], "has no attribute 'no_such_function'"),
    (["verify", "no_such_module_xyz:make", fn_spec("captum_guided")], "cannot import 'no_such_module_xyz'"),
    (["verify", "make_model", fn_spec("captum_guided")], "expected MODULE:NAME"),
    (["verify", f"{EXAMPLE}:where", fn_spec("captum_guided")], "failed"),        # factory needs an argument
    (["verify", f"{EXAMPLE}:RECIPES", fn_spec("captum_guided")], "failed"),     # not callable
    (["verify", "missing_file.py:make", fn_spec("captum_guided")], "no file"),
])
def test_cli_usage_errors_exit_2(capsys, argv, words):
    assert cli.main(argv) == 2
    assert words in capsys.readouterr().err


def test_cli_factory_returning_a_non_module(capsys, tmp_path):
    (tmp_path / "facts.py").write_text("import torch\ndef make():\n    return 3\n"
                                       "def ln():\n    return torch.nn.Sequential(torch.nn.LayerNorm(3))\n")
    assert cli.main(["verify", f"{tmp_path}/facts.py:make", fn_spec("captum_guided")]) == 2
    assert "not a torch.nn.Module" in capsys.readouterr().err
    assert cli.main(["verify", f"{tmp_path}/facts.py:ln", fn_spec("captum_guided")]) == 2
    assert "LayerNorm" in capsys.readouterr().err


def test_cli_bad_batch_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["verify", SPEC, fn_spec("captum_guided"), "--batch", "0"])
    assert e.value.code == 2
    assert "argument --batch: expected a positive whole number, got '0'" in capsys.readouterr().err


def test_cli_bad_mode_is_an_argparse_error():
    with pytest.raises(SystemExit) as e:
        cli.main(["verify", SPEC, fn_spec("captum_guided"), "--mode", "smoothgrad"])
    assert e.value.code == 2


def test_installed_console_script():
    exe = shutil.which("minigbp")
    if exe is None:
        pytest.skip("the minigbp console script is not installed (pip install -e .)")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([exe, "verify", SPEC, fn_spec("relu_function_forward_mask"), "--mode", "guided"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
    assert proc.returncode == 1, proc.stderr
    assert "verdict: vanilla  (claimed: guided -> MISMATCH)" in proc.stdout


# -------------------------------------------------------------------------- example

def test_example_script_prints_the_table_and_all_verdicts_hold(example_run):
    out, results = example_run
    assert [report.verdict for _, _, report in results] == [expected for _, expected, _ in results]
    assert out.startswith("recipe") and "where it diverges from its claim" in out
    assert "the hook on the ReLUs of model.features only" in out and "at classifier.4" in out
    assert np.sum([line.count("guided") > 0 for line in out.splitlines()]) >= 5


def test_example_script_exit_status(monkeypatch, capsys):
    row = ("Captum Saliency(abs=False)", R.make_model, R.captum_saliency, "vanilla", "vanilla")
    monkeypatch.setattr(R, "RECIPES", [row])
    monkeypatch.setattr(R, "TF_RECIPES", [])
    assert R.main([]) == 0
    monkeypatch.setattr(R, "RECIPES", [row[:4] + ("guided",)])
    assert R.main([]) == 1
    assert "unexpected verdicts: Captum Saliency(abs=False)" in capsys.readouterr().err
