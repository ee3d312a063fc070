"""The one checking engine (corrective_unlearning.checks): its semantics pinned with hand-written expectations, and
one test per registry kind showing a bad value refused with a clear message before any work starts."""
from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
from torch import nn

from corrective_unlearning import checks
from corrective_unlearning.capacity import WIDEN_PARAMS, widen
from corrective_unlearning.checks import REQUIRED, ConfigError, Interval, Param, check_value, check_values, declare
from corrective_unlearning.config import ConfigError as ConfigErrorFromConfig
from corrective_unlearning.fix.auto import CANDIDATES
from corrective_unlearning.manipulations import check_params
from corrective_unlearning.methods import METHODS, expand_settings
from corrective_unlearning.proxies import PROXIES
from corrective_unlearning.report.figures import method_style
from corrective_unlearning.runner.executors import create_executor
from corrective_unlearning.suspects import RANKINGS
from corrective_unlearning.triggers import TRIGGERS, TriggerError, check_trigger_spec

DECLARED = {
    "lr": Param(float, 0.005, low=0, closed="neither"),
    "passes": Param(int, 10, low=1),
    "fraction": Param(float, 0.2, low=0, high=1),
    "variant": Param(str, "original", choices=("original", "bench")),
    "steps": Param(int, None, low=1, nullable=True),
}


def _refused(values: dict, **options) -> str:
    with pytest.raises(ConfigError) as error:
        check_values(values, DECLARED, where="method demo", **options)
    return str(error.value)


# ------------------------------------------------------------------------------------------------------ engine
def test_the_engine_is_the_configs_and_imports_nothing_from_the_package():
    assert ConfigErrorFromConfig is ConfigError
    tree = ast.parse(Path(checks.__file__).read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert all(node.level == 0 for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)), imported
    assert not any(m.startswith("corrective_unlearning") for m in imported)


def test_defaults_are_overlaid_and_values_pass_through_unchanged():
    resolved = check_values({"lr": 1, "steps": None}, DECLARED, where="method demo")
    assert resolved == {"lr": 1, "passes": 10, "fraction": 0.2, "variant": "original", "steps": None}
    assert type(resolved["lr"]) is int  # an int given for a float is kept as given (cache keys hash it as given)
    assert list(resolved) == list(DECLARED)
    assert check_values(None, DECLARED, where="x") == check_values({}, DECLARED, where="x")


def test_a_required_parameter_has_no_default():
    declared = {"a": Param(int), "b": Param(int, 2)}
    assert declared["a"].default is REQUIRED
    assert check_values({}, declared, where="x") == {"b": 2}


def test_unknown_names_are_listed_with_the_known_ones():
    assert _refused({"lrr": 1, "pases": 2}) == (
        "method demo: unknown parameter(s) ['lrr', 'pases']: method demo has no parameter of that name; "
        "accepted: lr, passes, fraction, variant, steps")
    with pytest.raises(ConfigError) as error:
        check_values({"x": 1}, {}, where="manipulation.params", noun="param", owner="manipulation none")
    assert str(error.value) == "manipulation.params: unknown param(s) ['x'] for manipulation none; accepted: (none)"


@pytest.mark.parametrize("values, message", [
    ({"passes": 2.0}, "method demo.passes: expected int, got float 2.0"),
    ({"passes": True}, "method demo.passes: expected int, got bool True"),
    ({"lr": "0.1"}, "method demo.lr: expected float, got str '0.1'"),
    ({"variant": 3}, "method demo.variant: expected str, got int 3"),
    ({"fraction": None}, "method demo.fraction: expected float, got null"),
    ({"steps": 1.5}, "method demo.steps: expected int, got float 1.5"),
])
def test_a_wrong_type_says_where_what_was_expected_and_what_came(values, message):
    assert _refused(values) == message


def test_a_wrong_type_in_the_must_be_phrasing():
    for value, kind in [(2.5, "an integer"), ("3", "an integer")]:
        with pytest.raises(ConfigError, match=f"^t: passes must be {kind}, got {value!r}$"):
            check_values({"passes": value}, DECLARED, where="t", phrasing="must be")
    with pytest.raises(ConfigError, match=r"^t: on must be true or false, got 'yes'$"):
        check_values({"on": "yes"}, {"on": Param(bool, True)}, where="t", phrasing="must be")


@pytest.mark.parametrize("values, message", [
    ({"lr": 0}, "method demo.lr: expected a number > 0, got 0"),
    ({"lr": -1e-3}, "method demo.lr: expected a number > 0, got -0.001"),
    ({"passes": 0}, "method demo.passes: expected an integer >= 1, got 0"),
    ({"fraction": 1.5}, "method demo.fraction: expected a number in [0, 1], got 1.5"),
    ({"steps": 0}, "method demo.steps: expected an integer >= 1, got 0"),
])
def test_out_of_range_names_the_value_and_the_valid_range(values, message):
    assert _refused(values) == message


def test_ranges_in_the_must_be_phrasing_and_their_ends():
    assert str(Interval(0, 1, "right")) == "(0, 1]" and str(Interval(1, None)) == "[1, inf]"
    assert str(Interval(0, None, "neither")) == "(0, inf)" and str(Interval(None, 5, "left")) == "[-inf, 5)"
    assert Interval(None, 5, "left").bound() == "< 5" and Interval(0, None).bound() == ">= 0"
    assert 1 in Interval(0, 1) and 1 not in Interval(0, 1, "left") and 0 not in Interval(0, 1, "right")
    with pytest.raises(ConfigError, match=r"^t: fraction must be in \[0, 1\], got -0.5$"):
        check_values({"fraction": -0.5}, DECLARED, where="t", phrasing="must be")


def test_choices_are_named():
    assert _refused({"variant": "fast"}) == "method demo: variant must be 'original' or 'bench', got 'fast'"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused_for_floats(value):
    assert _refused({"lr": value}) == f"method demo: lr must be a finite number, got {value!r}"
    with pytest.raises(ConfigError, match="finite"):  # even where no range is declared
        check_value(value, Param(float, 1.0), "x")


def test_null_is_accepted_only_where_declared():
    assert check_values({"steps": None}, DECLARED, where="x")["steps"] is None
    with pytest.raises(ConfigError, match="expected int, got null"):
        check_values({"passes": None}, DECLARED, where="x")


def test_a_mapping_is_required():
    assert _refused(3) == "method demo: expected dict, got int 3"


def test_the_error_class_and_labels_are_the_callers():
    with pytest.raises(TriggerError, match="^w: passes must be in"):
        check_values({"passes": 0}, DECLARED, where="w", phrasing="must be", error=TriggerError)
    with pytest.raises(ConfigError, match="^passes: expected int"):
        check_values({"passes": "x"}, DECLARED, where="w", label=str)


def test_bare_defaults_infer_their_declaration():
    assert declare("a", 3) == Param(int, 3, nullable=True)  # int and float defaults take null: "unset"
    assert declare("a", 0.5) == Param(float, 0.5, nullable=True)
    assert declare("a", True) == Param(bool, True)
    assert declare("a", "all") == Param(str, "all")
    assert declare("steps", None, {"steps": int}) == Param(int, None, nullable=True)
    assert declare("other", None, {"steps": int}).kind is checks.Any
    given = Param(int, 1, low=0)
    assert declare("a", given) is given


def test_optional_annotations_become_nullable():
    assert Param.of(float | None, None) == Param(float, None, nullable=True)
    assert Param.of(int, 3, low=1) == Param(int, 3, low=1)


# ------------------------------------------------------------------------------------------- every registry
def test_a_method_refuses_a_bad_hyperparameter_before_running():
    rem = METHODS.get("rem")
    with pytest.raises(ConfigError, match=r"method rem: hyperparameter 'beta': expected a number > 0, got 0"):
        rem(None, {"beta": 0})  # no task needed: refused before the method body runs
    with pytest.raises(ConfigError, match=r"method rem: hyperparameter 'threshold': expected a number in \[0, 1\]"):
        rem.resolve({"threshold": 2.0})
    with pytest.raises(ConfigError, match=r"method rem: hyperparameter 'p_on': expected a number in \[0, 1\]"):
        rem.resolve({"p_on": 1.5})
    with pytest.raises(ConfigError, match="method npo: hyperparameter 'max_epochs': expected an integer >= 1"):
        METHODS.get("npo").resolve({"max_epochs": 0})
    with pytest.raises(ConfigError, match="method scrub: variant must be 'original' or 'bench', got 'x'"):
        METHODS.get("scrub").resolve({"variant": "x"})
    with pytest.raises(ConfigError, match="method rum: hyperparameter 'subsets': expected an integer >= 1"):
        METHODS.get("rum").resolve({"subsets": 0})


def test_method_defaults_are_the_declared_ones():
    assert METHODS.get("rem").defaults["spare_fraction"] == WIDEN_PARAMS["spare_fraction"].default == 1.0
    assert type(METHODS.get("ssd").defaults["alpha"]) is float


def test_a_trigger_refuses_a_bad_value_with_its_name():
    with pytest.raises(TriggerError, match=r"^trigger patch: value must be in \[0, 255\], got 300$"):
        check_trigger_spec({"name": "patch", "value": 300})
    with pytest.raises(TriggerError, match=r"^trigger sig: frequency must be in \(0, inf\), got 0$"):
        TRIGGERS.get("sig")(frequency=0)


def test_a_manipulation_refuses_a_bad_value_when_the_config_loads():
    with pytest.raises(ConfigError, match="^m.params.clean_label: expected bool, got int 1$"):
        check_params("poison", {"clean_label": 1}, "m.params")
    with pytest.raises(ConfigError, match=r"^m.params.trigger blend: alpha must be in \(0, 1\], got 2"):
        check_params("poison", {"trigger": {"name": "blend", "alpha": 2}}, "m.params")


def test_a_proxy_refuses_a_bad_value():
    heldout = PROXIES.get("heldout")
    with pytest.raises(ConfigError, match="^proxy heldout: parameter 'augment': expected bool, got str 'yes'$"):
        heldout.resolve({"augment": "yes"})
    with pytest.raises(ConfigError, match="no parameter"):
        heldout.resolve({"epoch": 3})


def test_a_ranking_refuses_a_bad_value():
    with pytest.raises(ConfigError, match="^ranking embedding: parameter 'k': expected an integer >= 1, got 0$"):
        RANKINGS.get("embedding").resolve({"k": 0})
    with pytest.raises(ConfigError, match="^ranking label_issues: parameter 'folds': expected an integer >= 2"):
        RANKINGS.get("label_issues").resolve({"folds": 1})


def test_capacity_refuses_a_bad_spare_fraction():
    with pytest.raises(ConfigError, match="^spare_fraction: expected a number > 0, got 0$"):
        widen(nn.Sequential(nn.Linear(2, 2)), spare_fraction=0)
    with pytest.raises(ConfigError, match=r"^p_on: expected a number in \[0, 1\], got 2$"):
        widen(nn.Sequential(nn.Linear(2, 2)), p_on=2)


def test_an_executor_refuses_bad_options_before_any_worker(tmp_path):
    with pytest.raises(ConfigError, match="^workers: expected an integer >= 1, got 0$"):
        create_executor("local", None, tmp_path, workers=0)
    with pytest.raises(ConfigError, match="^retries: expected int, got float 1.5$"):
        create_executor("local", None, tmp_path, retries=1.5)


# --------------------------------------------------------------------------------------- registry metadata
def test_styles_and_auto_candidates_come_from_the_registry():
    assert method_style("rem") == {"color": "navy", "marker": "d"}
    # the order they run in (and win ties)
    assert list(CANDIDATES) == ["trigger_synthesis", "rem", "npo", "cf"]
    assert CANDIDATES["rem"] == {"grid": {"lr": [0.005]}}


def test_one_settings_expansion():
    assert expand_settings({"b": [1, 2], "a": 0}, {"c": 3}) == [{"c": 3, "a": 0, "b": 1}, {"c": 3, "a": 0, "b": 2}]
    assert expand_settings([{"a": [1, 2]}, {"a": [2, 3]}]) == [{"a": 1}, {"a": 2}, {"a": 3}]  # listed twice: once
    assert expand_settings({}) == [{}]


def test_every_registered_method_has_its_own_fixed_style():
    """Figures read the same in every run: each method declares a color and marker, and no two share both (the
    styles of random-label and l1-sparse were once keyed by misspelt names and never applied)."""
    styles = {name: METHODS.get(name).style for name in METHODS.names()}
    assert [name for name, style in styles.items() if style is None] == []
    assert len(set(styles.values())) == len(styles)
