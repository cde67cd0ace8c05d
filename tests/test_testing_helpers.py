"""minigbp.testing: assert_matches for frameworks (the layer checkers for courses are
tested in test_course.py)."""


import pytest

import minigbp as mg
from minigbp import ops, testing

pytest.importorskip("hypothesis")


def test_the_course_checkers_are_importable_from_testing():
    from minigbp import course

    assert testing.check_maxpool_backward is course.check_maxpool_backward
    testing.check_relu_backward(ops.relu_forward, ops.relu_backward, modes=mg.MODES, max_examples=5)


# ------------------------------------------------------------------------- assert_matches

@pytest.fixture(scope="module")
def recipes():
    torch = pytest.importorskip("torch")
    pytest.importorskip("captum")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    from example_scripts import load_example

    yield load_example("verify_recipes.py", "verify_recipes_for_helpers")
    torch.set_num_threads(before)


def test_assert_matches_passes_a_correct_implementation(recipes):
    report = testing.assert_matches(recipes.make_model(), recipes.captum_guided, mode="guided")
    assert report.ok and report.verdict == "guided"
    testing.assert_matches(recipes.make_model(), recipes.captum_deconvolution, mode="deconvnet", batch=2)


def test_assert_matches_names_the_mode_matched_instead(recipes):
    with pytest.raises(AssertionError) as e:
        testing.assert_matches(recipes.make_model(), recipes.relu_function_forward_mask, mode="guided")
    msg = str(e.value)
    assert msg.startswith("relu_function_ForwardMaskReLU does not compute minigbp's 'guided' mode: "
                          "it matches 'vanilla' instead")
    assert "verdict: vanilla" in msg  # followed by the full report


def test_assert_matches_none_names_where_it_diverges(recipes):
    with pytest.raises(AssertionError, match="it matches none of vanilla, deconvnet and guided; against guided "
                                             "it first diverges at classifier.4"):
        testing.assert_matches(recipes.make_model(), recipes.hook_features_only)


def test_assert_matches_reports_a_failing_function(recipes):
    with pytest.raises(AssertionError, match="it failed: RuntimeError"):
        testing.assert_matches(recipes.make_model_inplace(), recipes.hook_recipe)


def test_assert_matches_rejects_unknown_modes(recipes):
    with pytest.raises(ValueError, match="unknown mode"):
        testing.assert_matches(recipes.make_model(), recipes.captum_guided, mode="smoothgrad")
