"""minigbp.course: the checkers pass correct student code (also code relying on what the
course lets students assume, and other valid subgradients when those are allowed), catch the
classic mistakes with a message a student can act on, and `minigbp grade` turns them into
points and Gradescope's results.json."""

import json
import os
import re
import types

import numpy as np
import pytest

import minigbp as mg
from minigbp import course, ops
from minigbp.course import grade
from minigbp.course.rules import maxpool_nearest, relu_nearest

hypothesis = pytest.importorskip("hypothesis")
pytest.importorskip("scipy")
from hypothesis import given, strategies as st  # noqa: E402

SUBMISSIONS = os.path.join(os.path.dirname(__file__), "course_submissions")
FEW = 30  # examples per property where a mistake is to be found (correct code gets the profile's number)


def submission(name):
    return grade.load_file(os.path.join(SUBMISSIONS, name + ".py"))


def failed(outcomes):
    return {(o.function, o.property) for o in outcomes if not o.passed}


def message_of(outcomes, function, prop):
    return next(o.message for o in outcomes if (o.function, o.property) == (function, prop))


# --------------------------------------------------------------- correct code passes

def test_minigbp_ops_pass_every_property_with_every_option():
    course.check_conv_forward(ops.conv2d_forward_naive, dilation=True, groups=True)
    course.check_conv_backward(ops.conv2d_forward_naive, ops.conv2d_backward_naive, dilation=True, groups=True)
    course.check_maxpool_forward(ops.maxpool2d_forward_naive, dilation=True, ceil_mode=True)
    course.check_maxpool_backward(ops.maxpool2d_forward, ops.maxpool2d_backward, dilation=True, ceil_mode=True)
    course.check_avgpool_backward(ops.avgpool2d_forward_naive, ops.avgpool2d_backward_naive, ceil_mode=True,
                                  count_include_pad=True)
    course.check_relu_forward(lambda x: np.maximum(x, 0))  # a forward may return out alone
    course.check_relu_backward(ops.relu_forward, ops.relu_backward_naive, modes=mg.MODES)
    course.check_linear_backward(ops.linear_forward_naive, ops.linear_backward_naive)
    course.check_batchnorm_backward(ops.batchnorm2d_forward_naive, ops.batchnorm2d_backward_naive)
    course.check_agreement("conv", (ops.conv2d_forward, ops.conv2d_backward),
                           (ops.conv2d_forward_naive, ops.conv2d_backward_naive))


@pytest.mark.parametrize("name", ["cs231n_correct", "cs231n_other_subgradients"])
def test_correct_cs231n_submissions_score_full_marks(name):
    outcomes = grade.grade_module(submission(name), conditions="cs231n", rules="any-subgradient")
    assert failed(outcomes) == set()
    functions = {o.function for o in outcomes}
    assert {"conv_backward_naive", "max_pool_backward_naive", "relu_backward", "affine_backward"} <= functions
    if name == "cs231n_other_subgradients":  # the fast pair is graded too, and compared with the naive one
        assert ("max_pool_backward_fast", "agrees with naive") in {(o.function, o.property) for o in outcomes}


def test_stricter_settings_explain_what_they_ask_for():
    """Under PyTorch's rules and shapes the same correct code fails, and each message says which
    option would accept it."""
    m = submission("cs231n_other_subgradients")
    ties = course.run("maxpool", m.max_pool_forward_naive, m.max_pool_backward_naive, conditions="cs231n",
                      rules="pytorch", properties=["ties"])[0]
    assert not ties.passed and "the last tied maximum. That is a valid subgradient" in ties.message
    assert "--rules any-subgradient" in ties.message
    zeros = course.run("relu", m.relu_forward, m.relu_backward, rules="pytorch", properties=["zeros", "values"])
    assert [o.passed for o in zeros] == [True, False] or [o.property for o in zeros if not o.passed] == ["zeros"]
    text = next(o.message for o in zeros if not o.passed)
    assert "lets the signal through at x == 0" in text and "--rules any-subgradient" in text
    stride = course.run("conv", m.conv_forward_naive, conditions="pytorch", properties=["stride"])[0]
    assert "raised AssertionError" in stride.message and "do not tile" in stride.message
    assert "--conditions cs231n" in stride.message


# --------------------------------------------------------------- the classic mistakes

BUGS = {
    "bug_crop": ({("conv_backward_naive", p) for p in ("shape", "values", "stride", "dtype")},
                 "a[p:-p] is a[0:0], which is empty"),
    "bug_all_ties": ({("max_pool_backward_naive", "ties")}, "to *every* tied maximum"),
    "bug_overwrite": ({("max_pool_backward_naive", p) for p in ("ties", "stride")}, "where it should add (+=)"),
    "bug_window_from_stride": ({("max_pool_forward_naive", "stride")}, "window size taken from the stride"),
    # the backward is right: where the forward crashes it is given the documented cache instead
    "bug_pad_one": ({("conv_forward_naive", p) for p in ("shape", "values", "padding", "stride", "in-place", "dtype")},
                    "padding hard-coded"),
    "bug_dout_in_place": ({("relu_backward", "in-place")}, "modified its argument `dout` in place"),
}


@pytest.mark.parametrize("name", sorted(BUGS))
def test_each_classic_mistake_fails_exactly_its_properties_with_a_hint(name):
    want, words = BUGS[name]
    outcomes = grade.grade_module(submission(name), conditions="cs231n", rules="any-subgradient", max_examples=FEW)
    assert failed(outcomes) == want
    function, prop = sorted(want)[0]
    first_own = [o for o in outcomes if not o.passed and "failed first" not in o.message]
    assert any(words in o.message for o in first_own), "\n\n".join(o.message for o in first_own)
    for o in outcomes:
        if not o.passed:
            assert f"property {o.property!r} failed" in o.message or "failed first" in o.message


def test_unfinished_crashing_and_missing_functions_score_zero_and_never_stop_the_others():
    outcomes = grade.grade_module(submission("bug_unfinished"), conditions="cs231n", rules="any-subgradient",
                                  max_examples=FEW)
    bad = failed(outcomes)
    assert {p for f, p in bad if f == "affine_backward"} == {"shape", "values", "in-place", "dtype"}
    assert "dx is None: is the function finished?" in message_of(outcomes, "affine_backward", "values")
    assert {f for f, _ in bad} == {"affine_backward", "conv_backward_naive", "max_pool_backward_naive"}
    crash = message_of(outcomes, "conv_backward_naive", "values")
    assert "raised IndexError" in crash and "bug_unfinished.py, line" in crash and "x[10]" in crash
    missing = message_of(outcomes, "max_pool_backward_naive", "ties")
    assert "not found in bug_unfinished: define a function named max_pool_backward_naive" in missing
    assert ("relu_backward", "zeros") not in bad and ("conv_forward_naive", "values") not in bad


def test_a_function_that_hangs_loses_its_points_and_the_rest_is_graded():
    def relu_backward(dout, cache):
        while True:
            pass

    module = types.ModuleType("hangs")
    module.relu_forward, module.relu_backward = ops.relu_forward, relu_backward
    outcomes = grade.grade_module(module, time_limit=0.3, max_examples=5)
    assert failed(outcomes) == {("relu_backward", p) for p in ("shape", "values", "zeros", "in-place", "dtype")}
    assert "did not finish within 0.3 s" in message_of(outcomes, "relu_backward", "zeros")


# --------------------------------------------------------------- messages

def test_a_message_has_the_property_rule_case_and_a_reproduction_that_reproduces(monkeypatch):
    outcomes = grade.grade_module(submission("bug_all_ties"), conditions="cs231n", rules="pytorch", max_examples=FEW)
    msg = message_of(outcomes, "max_pool_backward_naive", "ties")
    assert msg.startswith("max_pool_backward_naive: property 'ties' failed (windows whose maximum is tied")
    assert "[conditions: cs231n, rules: pytorch]" in msg
    assert re.search(r"Smallest failing case: x.shape=\(1, 1, [12], 2\), pool_height=[12], pool_width=2", msg)
    assert "Why: each window's signal dout[n, c, i, j] goes to the position of the window's maximum" in msg
    assert "expected dx (float64) = np.array(" in msg and "got dx (float64) = np.array(" in msg
    for internal in ("Falsifying", "Explanation", "hypothesis", "rng", "arrayprint", "ExceptionGroup"):
        assert internal not in msg
    snippet = msg.split("Reproduce:\n", 1)[1]
    got = np.array(eval(re.search(r"got dx \(float64\) = np\.array\((.*?)\)\n", msg, re.S).group(1)))
    monkeypatch.syspath_prepend(SUBMISSIONS)
    scope = {}
    exec(re.sub(r"^    ", "", snippet, flags=re.M), scope)
    np.testing.assert_array_equal(scope["dx"], got)


def test_checks_are_derandomized_and_write_nothing_in_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = submission("bug_overwrite")
    messages = []
    for _ in range(2):
        with pytest.raises(AssertionError) as e:
            course.check_maxpool_backward(module.max_pool_forward_naive, module.max_pool_backward_naive,
                                          conditions="cs231n")
        messages.append(str(e.value))
    assert messages[0] == messages[1]
    assert messages[0].startswith("2 of 6 properties failed: ties, stride\n\n")  # one error, all listed
    assert os.listdir(tmp_path) == []


def test_tolerance_follows_the_returned_dtype():
    def relu_backward_float32(dout, cache):
        return (dout * (cache > 0)).astype(np.float32)

    outcomes = course.run("relu", ops.relu_forward, relu_backward_float32)
    assert failed(outcomes) == {("relu_backward_float32", "dtype")}
    assert "is float32 for float64 inputs: it loses precision" in outcomes[-1].message
    assert course.tolerance(np.float32) == pytest.approx(1.19e-5, rel=0.01) and course.tolerance(np.float64) == 1e-9


def test_messages_for_wrong_structure_and_signatures():
    def conv_forward_none(x, w, b, stride=1, padding=0):
        return None

    with pytest.raises(AssertionError, match="conv_forward_none returned None: is it finished"):
        course.check_conv_forward(conv_forward_none, properties=["values"])
    with pytest.raises(AssertionError, match="conv2d_backward could not be checked, because conv_forward_none failed"):
        course.check_conv_backward(conv_forward_none, ops.conv2d_backward, properties=["values"])
    # a CS231n backward is graded on its own: given the documented cache where the forward fails
    cs231n = submission("cs231n_correct")

    def max_pool_forward_crashing(x, pool_param):
        raise RuntimeError("not today")

    course.check_maxpool_backward(max_pool_forward_crashing, cs231n.max_pool_backward_naive, style="cs231n",
                                  properties=["values", "ties"])
    cs231n = submission("cs231n_correct")
    with pytest.raises(AssertionError, match=r"unexpected keyword argument(.|\n)*check it with style='cs231n'"):
        course.check_conv_forward(cs231n.conv_forward_naive, style="minigbp", properties=["values"])

    def backward_one_value(dout, cache):
        return ops.conv2d_backward(dout, cache)[0]

    with pytest.raises(AssertionError, match="it must return dx, dw, db"):
        course.check_conv_backward(ops.conv2d_forward, backward_one_value, properties=["values"])


def test_hints_for_mistakes_in_pytorch_style_code():
    def conv_backward_no_flip(dout, cache):
        x, w, b, g = cache
        flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1])
        dx = ops.conv2d_backward(dout, ops.conv2d_forward(x, flipped, b, g.S, g.P)[1])[0]
        return (dx,) + ops.conv2d_backward(dout, cache)[1:]

    with pytest.raises(AssertionError, match="without flipping them"):
        course.check_conv_backward(ops.conv2d_forward, conv_backward_no_flip, properties=["values"])

    def maxpool_zero_padded(x, kernel_size, stride=None, padding=0):
        xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        return ops.maxpool2d_forward(xp, kernel_size, stride)

    with pytest.raises(AssertionError, match="what zero padding gives: in max pooling the padding counts as -inf"):
        course.check_maxpool_forward(maxpool_zero_padded, properties=["padding"])

    def relu_backward_mixed_up(dout, cache, mode):
        return ops.relu_backward(dout, cache, {"deconvnet": "guided", "guided": "deconvnet"}.get(mode, mode))

    with pytest.raises(AssertionError, match="your deconvnet result is what the guided rule gives"):
        course.check_relu_backward(ops.relu_forward, relu_backward_mixed_up, modes=mg.MODES)


def test_fast_and_naive_disagreeing_is_reported():
    def conv_forward_fast(x, w, b, stride=1, padding=0):
        return ops.conv2d_forward(x, w, b, 1, padding)  # ignores the stride

    with pytest.raises(AssertionError, match="agrees with naive"):
        course.check_agreement("conv", (conv_forward_fast, None), (ops.conv2d_forward_naive, None))


def test_average_pooling_batchnorm_and_linear_mistakes_are_caught():
    def avgpool_forward_excluding_pad(x, kernel_size, stride=None, padding=0):
        return ops.avgpool2d_forward(x, kernel_size, stride, padding, count_include_pad=False)

    with pytest.raises(AssertionError, match="property 'padding' failed"):
        course.check_avgpool_forward(avgpool_forward_excluding_pad)

    def batchnorm_forward_no_eps(x, mean, var, gamma, beta):
        return ops.batchnorm2d_forward(x, mean, var, gamma, beta, eps=0.0)

    with pytest.raises(AssertionError, match="property 'values' failed"):
        course.check_batchnorm_forward(batchnorm_forward_no_eps)

    def linear_backward_no_db(dout, cache):
        dx, dw, db = ops.linear_backward(dout, cache)
        return dx, dw, db * 0

    with pytest.raises(AssertionError, match="db differs"):
        course.check_linear_backward(ops.linear_forward, linear_backward_no_db)


# --------------------------------------------------------------- the "any-subgradient" rules

@st.composite
def pool_cases(draw):
    HH, WW, S = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    P = draw(st.integers(0, min(HH, WW) // 2))
    D, ceil = draw(st.integers(1, 2)), draw(st.booleans())
    H, W = (draw(st.integers(D * (k - 1) + 1, D * (k - 1) + 5)) for k in (HH, WW))
    x = np.array(draw(st.lists(st.integers(-2, 2), min_size=2 * H * W, max_size=2 * H * W)), float)
    out, cache = ops.maxpool2d_forward(x.reshape(1, 2, H, W), (HH, WW), S, P, D, ceil)
    dout = np.array(draw(st.lists(st.integers(-3, 3), min_size=out.size, max_size=out.size)), float)
    return dout.reshape(out.shape), cache


@given(pool_cases())
def test_any_subgradient_accepts_every_tie_rule_and_nothing_that_counts_a_signal_twice(case):
    dout, cache = case
    for ties in ("first", "last", "split"):
        dx = ops.maxpool2d_backward(dout, cache, ties=ties)
        np.testing.assert_allclose(maxpool_nearest(dx, dout, cache), dx, atol=1e-9)
    doubled = ops.maxpool2d_backward(2 * dout, cache)
    if np.any(dout):
        assert np.abs(maxpool_nearest(doubled, dout, cache) - doubled).max() > 0.5


def test_any_subgradient_relu_accepts_any_share_at_zero_only():
    x = np.array([-1.0, 0.0, 0.0, 2.0])
    dout = np.array([1.0, 2.0, -2.0, 3.0])
    for mode, share in (("vanilla", 0.25), ("guided", 1.0)):
        got = np.array([0.0, 2.0 * share, -2.0 * share if mode == "vanilla" else 0.0, 3.0])
        np.testing.assert_array_equal(relu_nearest(got, dout, x, mode), got)
    too_much = np.array([0.0, 3.0, 0.0, 3.0])
    assert relu_nearest(too_much, dout, x, "vanilla")[1] == 2.0


# --------------------------------------------------------------- the command line

def test_grade_command_prints_points_and_writes_gradescope_json(tmp_path, capsys):
    from minigbp.cli import main

    out = tmp_path / "results.json"
    status = main(["grade", os.path.join(SUBMISSIONS, "bug_dout_in_place.py"), "--conditions", "cs231n",
                   "--rules", "any-subgradient", "--json", str(out), "--max-examples", "20"])
    printed = capsys.readouterr().out
    assert status == 1
    assert "relu_backward            in-place  0/1  FAILED" in printed and "total: 39/40" in printed
    results = json.loads(out.read_text())
    assert results["score"] == 39 and len(results["tests"]) == 40
    test = next(t for t in results["tests"] if t["name"] == "relu_backward: in-place")
    assert test["score"] == 0 and test["max_score"] == 1 and test["status"] == "failed"
    assert "modified its argument `dout` in place" in test["output"]
    assert all(t["status"] == "passed" and t["score"] == 1 for t in results["tests"] if t is not test)


def test_grade_command_on_files_that_do_not_import_or_hold_no_layers(tmp_path, capsys):
    from minigbp.cli import main

    broken = tmp_path / "broken.py"
    broken.write_text("def relu_forward(x)\n    return x\n")
    out = tmp_path / "results.json"
    assert main(["grade", str(broken), "--json", str(out)]) == 1
    assert "could not be imported" in capsys.readouterr().out
    assert json.loads(out.read_text())["score"] == 0
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    assert main(["grade", str(empty)]) == 2
    assert "no layer functions found" in capsys.readouterr().err
    assert main(["grade", str(tmp_path / "missing.py")]) == 2
