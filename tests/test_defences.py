"""The clean reserve and the clean-data defences (ft_clean, nad, anp, i-bau, ft_after)."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import trained_run
from torch import nn

from corrective_unlearning.config import ConfigError
from corrective_unlearning.experiment import build_setting, train_original
from corrective_unlearning.methods import METHODS
from corrective_unlearning.methods.anp import mask_model, set_perturbed
from corrective_unlearning.methods.i_bau import hypergradient, inner_step
from corrective_unlearning.methods.nad import attention_loss, attention_map
from corrective_unlearning.methods import needs_flagged
from corrective_unlearning.reserve import split_validation
from corrective_unlearning.runner import deletion_set, expand_cells, load_grid_config, make_task
from corrective_unlearning.training import Recipe

RECIPE = Recipe(steps=30, batch_size=32, crop_padding=1, flip=False)
DEFENCES = ["ft_clean", "nad", "anp", "i-bau"]
TINY = {"ft_clean": {"steps": 4}, "nad": {"steps": 3, "teacher_steps": 2}, "anp": {"iterations": 3},
        "i-bau": {"rounds": 1, "K": 2}}


@pytest.fixture(scope="module")
def setting_and_original(synthetic, runtime):
    setting = build_setting(synthetic, "poison", 40, 0, runtime, val_size=32)
    original, _ = train_original(setting, "small_cnn", RECIPE, runtime)
    return setting, original


# -- the reserve ----------------------------------------------------------------------------------------------------

def test_split_validation_is_a_stratified_disjoint_partition():
    val_idx = torch.arange(100, 160)
    labels = torch.arange(60) % 3
    reserve, selection = split_validation(val_idx, labels, 0.5, seed=4)
    assert len(set(reserve.tolist()) & set(selection.tolist())) == 0
    assert sorted(reserve.tolist() + selection.tolist()) == val_idx.tolist()
    by_class = torch.bincount(labels[reserve - 100], minlength=3)
    assert by_class.tolist() == [10, 10, 10]
    again, _ = split_validation(val_idx, labels, 0.5, seed=4)
    assert torch.equal(reserve, again)
    none, everything = split_validation(val_idx, labels, 0.0, seed=4)
    assert len(none) == 0 and torch.equal(everything, val_idx)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        split_validation(val_idx, labels, 1.0, seed=4)


def test_reserve_is_disjoint_from_selection_and_training(setting_and_original, runtime):
    setting, original = setting_and_original
    carved = setting.with_reserve(0.5)
    reserve, selection, train = (set(t.tolist()) for t in (carved.clean_idx, carved.val_idx, carved.train_idx))
    assert reserve and selection
    assert not reserve & selection and not reserve & train and not selection & train
    assert reserve | selection == set(setting.val_idx.tolist())
    task = make_task(carved, original, deletion_set(carved, 0.5), RECIPE, runtime)
    assert torch.equal(task.clean_idx, carved.clean_idx) and torch.equal(task.val_idx, carved.val_idx)
    assert not set(task.clean_idx.tolist()) & set(task.train_idx.tolist())
    m = carved.manipulated  # the validation split is never manipulated: the reserve's given labels are its clean ones
    assert torch.equal(task.labels[task.clean_idx].cpu(), m.clean_labels[carved.clean_idx])
    assert not m.triggered[carved.clean_idx].any()
    assert carved.describe()["clean_reserve"] == len(reserve)
    assert "clean_reserve" not in setting.describe()  # settings without a reserve describe themselves as before


@pytest.mark.parametrize("name", DEFENCES + ["ft_after"])
def test_a_task_without_reserve_refuses_the_defences(setting_and_original, runtime, name):
    setting, original = setting_and_original
    task = make_task(setting, original, deletion_set(setting, 0.5), RECIPE, runtime)
    with pytest.raises(ValueError, match="no clean reserve"):
        METHODS.get(name)(task, {**TINY.get(name, {}), **({"first": "cf", "first_params": {"steps": 2}}
                                                          if name == "ft_after" else {})})


def test_only_methods_needing_no_flagged_samples_run_on_an_empty_deletion_set(setting_and_original, runtime):
    setting, original = setting_and_original
    carved = setting.with_reserve(0.5)
    with pytest.raises(ValueError, match="S_f is empty"):
        dataclasses.replace(make_task(carved, original, deletion_set(carved, 0.5), RECIPE, runtime),
                            forget_idx=torch.empty(0, dtype=torch.long), allow_empty_forget=False)
    task = make_task(carved, original, None, RECIPE, runtime)
    assert len(task.forget_idx) == 0
    assert [n for n in DEFENCES if needs_flagged(n)] == [] and needs_flagged("cf") and needs_flagged("ft_after")
    with pytest.raises(ValueError, match="0% discovery"):
        METHODS.get("cf")(task, {"steps": 2})


@pytest.mark.parametrize("name", DEFENCES)
def test_each_defence_runs_without_flagged_samples_and_notes_its_clean_samples(setting_and_original, runtime, name):
    setting, original = setting_and_original
    carved = setting.with_reserve(0.5)
    task = make_task(carved, original, None, RECIPE, runtime)
    before = {k: v.clone() for k, v in original.state_dict().items()}
    result = METHODS.get(name)(task, {**TINY[name], "clean_samples": 10})
    model = result.model
    assert model is not original
    assert all(torch.equal(before[k], v) for k, v in original.state_dict().items())
    assert result.notes["clean_samples"] == 10
    assert METHODS.get(name)(task, TINY[name]).notes["clean_samples"] == len(carved.clean_idx)
    x = task.inputs(carved.val_idx[:4])
    assert torch.isfinite(model.eval()(x)).all()


def test_ft_after_runs_the_corrective_method_then_fine_tunes(setting_and_original, runtime):
    setting, original = setting_and_original
    carved = setting.with_reserve(0.5)
    task = make_task(carved, original, deletion_set(carved, 0.5), RECIPE, runtime)
    notes = METHODS.get("ft_after")(task, {"first": "cf", "first_params": {"steps": 2}, "steps": 2}).notes
    assert notes["first"]["method"] == "cf" and notes["clean_samples"] == len(carved.clean_idx)


# -- NAD: the attention map and loss on a hand-made activation -------------------------------------------------------

def test_nad_attention_map_and_loss_by_hand():
    # one sample, two channels, 2x2: |a|^2 summed over channels = [[1+0, 4+1], [0+4, 9+0]] = [[1, 5], [4, 9]]
    a = torch.tensor([[[[1.0, -2.0], [0.0, 3.0]], [[0.0, 1.0], [-2.0, 0.0]]]])
    norm = (1 + 25 + 16 + 81) ** 0.5
    expected = torch.tensor([[[[1.0, 5.0], [4.0, 9.0]]]]) / (norm + 1e-6)
    assert torch.allclose(attention_map(a, p=2.0), expected)
    # p = 1: |a| summed = [[1, 3], [2, 3]], norm sqrt(1 + 9 + 4 + 9)
    assert torch.allclose(attention_map(a, p=1.0), torch.tensor([[[[1.0, 3.0], [2.0, 3.0]]]]) / (23 ** 0.5 + 1e-6))
    b = torch.zeros_like(a)
    b[0, 0] = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # attention [[1, 0], [0, 0]]
    hand = sum((e - f) ** 2 for e, f in zip(expected.flatten().tolist(), [1.0, 0.0, 0.0, 0.0])) / 4
    assert attention_loss(a, b) == pytest.approx(hand, rel=1e-5)
    assert attention_loss(a, 3.0 * a) == pytest.approx(0.0, abs=1e-10)  # a map is scale-free


# -- ANP: the masked forward at mask 1 and zero perturbation is M_o's ----------------------------------------------

@pytest.mark.parametrize("training", [False, True])
def test_anp_masked_forward_equals_the_unmasked_at_mask_one(setting_and_original, runtime, training):
    setting, original = setting_and_original
    x = setting.train_bank.batch(setting.val_idx[:8].to(runtime.device), torch.zeros(8, dtype=torch.bool))
    plain = copy.deepcopy(original).train(training)
    masked = copy.deepcopy(original)
    layers = mask_model(masked)
    masked.train(training)
    assert len(layers) == sum(isinstance(m, nn.BatchNorm2d) for m in original.modules())
    with torch.no_grad():
        expected = plain(x)
        set_perturbed(layers, True)  # mask 1, perturbations 0
        assert torch.allclose(masked(x), expected, atol=1e-6)
        set_perturbed(layers, False)
        assert torch.allclose(masked(x), expected, atol=1e-6)
        layers[-1].mask[0] = 0.0  # and a mask of 0 silences the scale of that channel
        layers[-1].noise_weight.fill_(0.3)
        set_perturbed(layers, True)
        assert not torch.allclose(masked(x), expected, atol=1e-6)


def test_anp_refuses_a_model_without_batch_norm():
    with pytest.raises(ValueError, match="no batch-norm layer"):
        mask_model(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


# -- I-BAU: the inner step against a hand-computed gradient on a linear model ---------------------------------------

def test_i_bau_inner_step_on_a_linear_model_by_hand():
    torch.manual_seed(0)
    B, d, C = 5, 6, 3
    linear = nn.Linear(d, C)
    model = nn.Sequential(nn.Flatten(), linear)
    x, y = torch.randn(B, 1, 2, 3), torch.tensor([0, 2, 1, 1, 0])
    delta = torch.randn(1, 1, 2, 3, requires_grad=True)
    step, reg = 0.1, 1e-3
    got = inner_step(model, x, y, delta, step, reg)
    W, b = linear.weight.detach(), linear.bias.detach()
    z = (x + delta.detach()).flatten(1) @ W.T + b
    p = torch.softmax(z, 1)
    onehot = torch.eye(C)[y]
    # d/d delta [-(1/B) sum_i CE(W (x_i + delta) + b, y_i) + reg ||delta||^2] = -(1/B) sum_i W^T (p_i - e_yi) + 2 reg delta
    grad = -((p - onehot) @ W).mean(0).view(1, 1, 2, 3) + 2 * reg * delta.detach()
    assert torch.allclose(got.detach(), delta.detach() - step * grad, atol=1e-6)


def test_i_bau_hypergradient_matches_the_implicit_gradient_of_a_quadratic():
    """With a linear model and a strongly convex inner problem the fixed-point iteration converges to the implicit
    function theorem's gradient; checked against finite differences of the exact inner solution."""
    torch.manual_seed(1)
    d, C = 4, 2
    linear = nn.Linear(d, C, bias=False).double()
    model = nn.Sequential(nn.Flatten(), linear)
    x, y = torch.randn(3, d).double(), torch.tensor([0, 1, 1])
    reg, step = 2.0, 0.1

    def solve(weight):  # the inner fixed point delta*(theta), by many steps of the map
        m = nn.Sequential(nn.Flatten(), nn.Linear(d, C, bias=False).double())
        with torch.no_grad():
            m[1].weight.copy_(weight)
        delta = torch.zeros(1, d, dtype=torch.double, requires_grad=True)
        for _ in range(400):
            delta = inner_step(m, x, y, delta, step, reg).detach().requires_grad_(True)
        return m, delta.detach()

    def outer_value(weight):
        m, delta = solve(weight)
        with torch.no_grad():
            return float(F.cross_entropy(m(x + delta), y))

    _, delta = solve(linear.weight.detach())
    params = [linear.weight]
    grads = hypergradient(model, params, x, y, delta, lambda dl: F.cross_entropy(model(x + dl), y), K=200,
                          step=step, reg=reg)
    w0 = linear.weight.detach().clone()
    fd = torch.zeros_like(w0)
    h = 1e-5
    for i in range(C):
        for j in range(d):
            e = torch.zeros_like(w0)
            e[i, j] = h
            fd[i, j] = (outer_value(w0 + e) - outer_value(w0 - e)) / (2 * h)
    assert torch.allclose(grads[0].detach(), fd, atol=1e-6)


# -- the grid's 0% discovery column and reserve option ---------------------------------------------------------------

GRID = {"dataset": {"name": "synthetic", "val_size": 32}, "recipe": {"steps": 15, "batch_size": 32},
        "manipulations": [{"name": "poison", "sizes": [40]}], "rates": [0, 0.5], "seeds": [0],
        "methods": {"cf": {"grid": {"last_k": ["all"]}, "params": {"steps": 3}},
                    "ft_clean": {"params": {"steps": 3}}}}


def _config(tmp_path, **changes):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({**GRID, **changes}))
    return load_grid_config(str(path), [])


def test_defences_run_once_in_the_zero_column_and_the_reserve_defaults_to_half(tmp_path):
    config = _config(tmp_path)
    cells = [(c.rate, c.method) for c in expand_cells(config)]
    assert cells == [(0.0, "original"), (0.0, "ft_clean"), (0.5, "cf")]
    assert config.reserve_fraction() == 0.5
    without = _config(tmp_path, rates=[0.5])
    assert [(c.rate, c.method) for c in expand_cells(without)] == [(0.0, "original"), (0.5, "cf"), (0.5, "ft_clean")]
    plain = _config(tmp_path, rates=[0.5], methods={"cf": {"params": {"steps": 3}}})
    assert plain.reserve_fraction() == 0.0  # grids without defences keep their whole validation split
    with pytest.raises(ConfigError, match="clean_reserve is 0"):
        _config(tmp_path, clean_reserve=0)
    with pytest.raises(ConfigError, match="no flagged sample"):
        _config(tmp_path, methods={"cf": {"params": {"steps": 3}}})
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        _config(tmp_path, clean_reserve=1.5)


def test_a_grid_with_defences_records_clean_samples_and_selects_on_the_rest(tmp_path):
    from corrective_unlearning.runner import load_records, run_grid

    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({**GRID, "clean_reserve": 0.25}))
    run_grid(load_grid_config(str(path), []), tmp_path / "out")
    records = {r["method"]: r for r in load_records(tmp_path / "out")}
    assert {r["status"] for r in records.values()} == {"ok"}, [r.get("error") for r in records.values()]
    assert records["ft_clean"]["clean_samples"] == 8 and records["ft_clean"]["forget_size"] == 0
    assert "clean_samples" not in records["cf"]
    for record in records.values():  # every cell is scored on the same selection split (the rest of val)
        assert record["setting"]["val_size"] == 24 and record["setting"]["clean_reserve"] == 8
    assert "deletion_change" not in records["ft_clean"]["metrics"]


def test_the_report_puts_defences_beside_the_best_corrective_method(tmp_path):
    from corrective_unlearning.report.build import build_report
    from corrective_unlearning.report.defences import kind
    from corrective_unlearning.runner import run_grid

    assert (kind("ft_clean"), kind("ft_after"), kind("rem"), kind("eu +300 suspects")) == \
        ("defence", "combined", "corrective", "corrective")
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({**GRID, "methods": {**GRID["methods"], "anp": {"params": {"iterations": 2}}}}))
    run_grid(load_grid_config(str(path), []), tmp_path / "out")
    paths = build_report(tmp_path / "out")
    summary = paths["summary.md"].read_text()
    section = summary[summary.index("## Defences beside corrective unlearning"):]
    assert "### Discovery rate 50% (defences: 0%)" in section
    assert "| attack | original | anp | ft_clean | best corrective |" in section
    assert "[cf]" in section and "| ft_clean | 0% | 16 |" in section
    assert "| cf | 50% | 0 |" in section


# -- correct(): the reserve comes from the user's validation data ---------------------------------------------------

def test_correct_carves_the_reserve_from_the_validation_data():
    from corrective_unlearning import correct
    from corrective_unlearning.fix.core import _carve_reserve

    val_idx, val_labels = torch.arange(500, 540), torch.arange(40) % 4
    reserve, selection, labels = _carve_reserve("i-bau", None, val_idx, val_labels, seed=0)
    assert len(reserve) == 20 and len(selection) == 20
    assert not set(reserve.tolist()) & set(selection.tolist())
    assert set(reserve.tolist()) | set(selection.tolist()) == set(val_idx.tolist())
    assert torch.equal(labels, val_labels[torch.isin(val_idx, selection)])
    assert _carve_reserve("cf", None, val_idx, val_labels, seed=0)[0] is None  # no reserve for unlearning methods

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(120, 3, 8, 8, generator=g), torch.arange(120) % 4
    val = (torch.randn(40, 3, 8, 8, generator=g), torch.arange(40) % 4)
    for name, hp in [("ft_clean", {"steps": 2}), ("anp", {"iterations": 2}), ("i-bau", {"rounds": 1, "K": 1}),
                     ("nad", {"steps": 2, "teacher_steps": 1})]:
        result = correct(model, (images, labels), [], method=name, hparams=hp, validation=val, device="cpu",
                         recipe=RECIPE)
        report = result.report
        assert report["validation"]["clean_reserve"] == 20 and report["validation"]["size"] == 20
        assert report["method_notes"]["clean_samples"] == 20 and report["flagged"] == 0
    with pytest.raises(ValueError, match="set is empty"):  # unlearning methods still need flagged samples
        correct(model, (images, labels), [], method="cf", validation=val, device="cpu", recipe=RECIPE)


@pytest.mark.parametrize("model_name", ["resnet9", "wrn28x10"])
def test_the_defences_run_on_the_other_architectures(synthetic, runtime, model_name):
    """NAD's feature layers, ANP's batch norm and I-BAU's double backward on ResNet-9 and a (shallow, narrow)
    wide ResNet."""
    from corrective_unlearning.methods.defence_common import feature_units
    from corrective_unlearning.models import MODELS

    setting = build_setting(synthetic, "poison", 40, 0, runtime, val_size=32).with_reserve(0.5)
    kwargs = {"depth": 10, "widen": 1} if model_name == "wrn28x10" else {}
    torch.manual_seed(0)
    original = MODELS.get(model_name)(num_classes=4, **kwargs).to(runtime.device).eval()
    task = make_task(setting, original, None, RECIPE, runtime)
    assert len(feature_units(original, task.inputs(setting.clean_idx[:1]), 3)) == 3
    for name in DEFENCES:
        model = METHODS.get(name)(task, {**TINY[name], "clean_samples": 8}).model
        assert torch.isfinite(model.eval()(task.inputs(setting.val_idx[:2]))).all(), name


def test_corrective_fix_runs_a_defence_with_a_clean_reserve(tmp_path):
    from corrective_unlearning.cli import main

    run = trained_run(tmp_path, "0.1")
    out = tmp_path / "fixed"
    assert main(["fix", "--model", str(run / "model.safetensors"), "--data", str(run), "--flagged",
                 str(run / "flagged.txt"), "--method", "i-bau", "--hparams", "{rounds: 1, K: 2}",
                 "--clean-reserve", "0.5", "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    record = __import__("json").loads((out / "record.json").read_text())
    assert record["validation"]["clean_reserve"] == 8 and record["validation"]["size"] == 8
    assert record["method_notes"]["clean_samples"] == 8
