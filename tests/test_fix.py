"""The practitioner's path: correct(), method auto, the readers of `corrective fix` and the report."""
from __future__ import annotations

import json

import pytest
import torch
from helpers import trained_run
from safetensors.torch import save_file
from torch import nn

from corrective_unlearning import correct
from corrective_unlearning.cli import main
from corrective_unlearning.fix import load_model, read_flagged
from corrective_unlearning.fix.auto import _choose
from corrective_unlearning.methods import METHODS, Method, Unlearned
from corrective_unlearning.models import create_model
from corrective_unlearning.training import Recipe
from user_models import TinyNet

TINY = Recipe(steps=10, batch_size=32, crop_padding=0, flip=False)


# ------------------------------------------------------------------------- a model and data defined right here


class Blobs(torch.utils.data.Dataset):
    """Float images already as the model reads them: class c is a bright quadrant c, with noise."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % 4
        self.images = torch.randn(n, 3, 8, 8, generator=g) * 0.3
        for i, c in enumerate(self.labels.tolist()):
            r, q = divmod(c, 2)
            self.images[i, :, 4 * r:4 * r + 4, 4 * q:4 * q + 4] += 2.0

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


@pytest.fixture(scope="module")
def user_setting():
    torch.manual_seed(0)
    model, data = TinyNet(), Blobs(200, 0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(model(data.images), data.labels).backward()
        opt.step()
    return model.eval(), data


def test_correct_works_on_a_user_model_and_dataset(user_setting):
    model, data = user_setting
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = correct(model, data, [0, 5, 10], method="cf", hparams={"steps": 3}, recipe=TINY,
                     validation=Blobs(40, 1), device="cpu")
    fixed, report = result  # unpacks as (model, report)
    assert fixed is not model and isinstance(fixed, TinyNet)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the user's model untouched
    assert report["validation"]["size"] == 40 and report["flagged"] == 3
    # independent recomputation of the reported accuracies
    val = Blobs(40, 1)
    with torch.no_grad():
        expected = 100.0 * float((fixed.eval()(val.images).argmax(1) == val.labels).double().mean())
        flagged_pred_before = model(data.images[[0, 5, 10]]).argmax(1)
    assert report["after"]["val_acc"] == pytest.approx(expected)
    assert report["before"]["flagged_acc_given"] == pytest.approx(
        100.0 * float((flagged_pred_before == data.labels[[0, 5, 10]]).double().mean()))


def test_flipped_rows_are_exactly_the_changed_predictions(user_setting):
    model, data = user_setting
    fixed, report = correct(model, data, list(range(0, 40, 4)), method="cf", hparams={"steps": 5},
                            recipe=TINY.replace(lr=0.5), validation=Blobs(20, 2), device="cpu")
    with torch.no_grad():
        changed = torch.nonzero(model(data.images).argmax(1) != fixed(data.images).argmax(1)).flatten().tolist()
    rows = report["flipped"]["rows"]
    assert [r["index"] for r in rows] == changed and report["flipped"]["training_samples"] == len(changed)
    assert all(r["in_deletion_set"] == (r["index"] in range(0, 40, 4)) for r in rows)


# ---------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("flagged, message", [
    ([500], r"indices in \[0, 199\] \(200 training samples\), got 1 outside it \(e.g. \[500\]\)"),
    ([-1], r"got 1 outside it \(e.g. \[-1\]\)"),
    ([3, 4, 3], r"1 index\(es\) appear more than once \(e.g. \[3\]\)"),
    ([1.5, 2.0], "integer indices or a boolean mask, got dtype torch.float"),
    ([], "the set is empty"),
    (torch.zeros(200, dtype=torch.bool), "the set is empty"),
    (torch.ones(10, dtype=torch.bool), "boolean mask of length 200 .* got one of length 10"),
    (torch.zeros(2, 2, dtype=torch.int64), "1-D"),
])
def test_bad_flagged_indices_are_refused(user_setting, flagged, message):
    model, data = user_setting
    with pytest.raises(ValueError, match=message):
        correct(model, data, flagged, method="cf", device="cpu")


def test_labels_beyond_the_models_outputs_are_refused(user_setting):
    model, data = user_setting
    images, labels = data.images, data.labels.clone()
    labels[7] = 6
    with pytest.raises(ValueError, match="4 outputs but the labels need 7 classes"):
        correct(model, (images, labels), [1], method="cf", device="cpu")
    with pytest.raises(ValueError, match="4 outputs but the labels need 5 classes"):
        correct(model, data, [1], method="cf", device="cpu",
                validation=(images[:10], torch.full((10,), 4)))


def test_a_model_with_the_wrong_output_shape_or_input_is_refused(user_setting):
    _, data = user_setting
    with pytest.raises(ValueError, match="2 outputs but the labels need 4 classes"):
        correct(TinyNet(classes=2), data, [1], method="cf", device="cpu")
    with pytest.raises(ValueError, match=r"does not accept the training images \(a batch of shape \(2, 3, 8, 8\)\)"):
        correct(TinyNet(channels=1), data, [1], method="cf", device="cpu")


def test_non_finite_weights_are_refused(user_setting):
    model, data = user_setting
    broken = TinyNet()
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.head.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"1 tensor\(s\) hold NaN or infinite values \(e.g. \['head.weight'\]\)"):
        correct(broken, data, [1], method="cf", device="cpu")


def test_bad_data_is_refused(user_setting):
    model, data = user_setting
    with pytest.raises(ValueError, match="200 images but 199 labels"):
        correct(model, (data.images, data.labels[:-1]), [1], device="cpu")
    with pytest.raises(ValueError, match=r"integer class indices \[N\], got Tensor torch.float32"):
        correct(model, (data.images, data.labels.float()), [1], device="cpu")
    with pytest.raises(ValueError, match=r"uint8 or float \[N, C, H, W\]"):
        correct(model, (data.images[:, 0, 0], data.labels), [1], device="cpu")
    with pytest.raises(ValueError, match="expected a torch Dataset"):
        correct(model, 42, [1], device="cpu")
    with pytest.raises(ValueError, match="validation images: expected the training images' form"):
        correct(model, data, [1], validation=(torch.zeros(4, 3, 6, 6), torch.zeros(4, dtype=torch.int64)),
                device="cpu")
    with pytest.raises(ValueError, match="method 'nope': expected 'auto' or one of"):
        correct(model, data, [1], method="nope", device="cpu")


# ----------------------------------------------------------------------------------------------------------- auto
def test_the_guarded_rule_skips_a_collapsed_candidate():
    # original validation 88: the drop of 2 admits 86 (inclusive), not 80
    rows = [{"method": "a", "status": "ok", "setting_index": 0, "metrics": {"val_acc": 80.0, "deletion_change": 100.0}},
            {"method": "b", "status": "ok", "setting_index": 1, "metrics": {"val_acc": 86.0, "deletion_change": 60.0}},
            {"method": "c", "status": "ok", "setting_index": 2, "metrics": {"val_acc": 87.5, "deletion_change": 40.0}},
            {"method": "d", "status": "failed", "error": "diverged"}]
    assert _choose(rows, {"val_acc": 88.0, "deletion_change": 8.0}, 2.0) == 1
    assert [r.get("score") for r in rows] == [90.0, 73.0, 63.75, None]  # (deletion change + val) / 2
    assert [r.get("chosen") for r in rows] == [False, True, False, None]
    assert _choose(rows, {"val_acc": 88.0, "deletion_change": 8.0}, 10.0) == 0  # a wider drop admits a


def test_auto_runs_every_candidate_and_returns_the_chosen_one(user_setting, monkeypatch):
    from corrective_unlearning.fix import auto

    monkeypatch.setattr(auto, "CANDIDATES", {"cf": {"grid": {"lr": [0.01, 0.5]}, "params": {"steps": 3}},
                                             "ssd": {"grid": {"alpha": [1.0]}}})
    model, data = user_setting
    val = Blobs(40, 1)
    fixed, report = correct(model, data, list(range(0, 20, 2)), method="auto", recipe=TINY, validation=val,
                            device="cpu")
    rows = report["candidates"]
    assert [(r["method"], r["hparams"].get("lr", r["hparams"].get("alpha"))) for r in rows] == \
        [("cf", 0.01), ("cf", 0.5), ("ssd", 1.0)]
    chosen = [r for r in rows if r["chosen"]]
    assert len(chosen) == 1 and report["method"] == chosen[0]["method"]
    with torch.no_grad():
        val_acc = 100.0 * float((fixed.eval()(val.images).argmax(1) == val.labels).double().mean())
    assert chosen[0]["metrics"]["val_acc"] == pytest.approx(val_acc)
    with pytest.raises(ValueError, match="expected a mapping from candidate method"):
        correct(model, data, [1], method="auto", hparams={"alpha": 3}, device="cpu")


def test_the_reconstruction_section_is_only_for_trigger_synthesis():
    from corrective_unlearning.fix.report import synthesis_lines

    assert synthesis_lines("rem", {"rounds": 3, "scores": [0.5]}) == []  # REM's notes also have "rounds"
    assert synthesis_lines("cf", {}) == []


def test_the_report_says_why_auto_chose_its_pick():
    from types import SimpleNamespace

    from corrective_unlearning.fix.report import why_chosen

    def row(method, val_acc, score, chosen=False):
        return {"method": method, "hparams": {"lr": 0.1}, "status": "ok", "metrics": {"val_acc": val_acc},
                "score": score, "guard": "within" if val_acc >= 88.0 else "fallback", "chosen": chosen}

    report = SimpleNamespace(max_val_drop=2.0, original_scores={"val_acc": 90.0},
                             candidates=[row("rem", 89.0, 80.0), row("trigger_synthesis", 91.0, 84.5, chosen=True),
                                         row("npo", 70.0, 95.0), {"method": "cf", "status": "failed"}])
    assert why_chosen(report) == ("Chosen: trigger_synthesis lr=0.1, score 84.5, 4.5 points ahead of rem (80.0) "
                                  "among the candidates within the drop; outside it (lost more validation "
                                  "accuracy): npo.")
    report.candidates = [row("npo", 70.0, 95.0, chosen=True), row("rem", 60.0, 99.0)]
    assert why_chosen(report) == ("No candidate kept validation accuracy within 2 points, so auto took npo, the "
                                  "one that kept the most (70.0).")


# ------------------------------------------------------------------------------------------ readers of the CLI
def test_flagged_files_in_every_format(tmp_path):
    (tmp_path / "f.txt").write_text("# found by review\n3\n\n17  # twice checked\n 42\n")
    (tmp_path / "f.csv").write_text("name,index\na,3\nb,17\nc,42\n")
    (tmp_path / "g.csv").write_text("3\n17\n42\n")
    (tmp_path / "f.json").write_text(json.dumps({"indices": [3, 17, 42]}))
    (tmp_path / "g.json").write_text("[3, 17, 42]")
    for name in ("f.txt", "f.csv", "g.csv", "f.json", "g.json"):
        assert read_flagged(tmp_path / name) == [3, 17, 42], name
    (tmp_path / "bad.txt").write_text("3\nseven\n")
    with pytest.raises(ValueError, match="bad.txt, line 2: expected an integer index, got 'seven'"):
        read_flagged(tmp_path / "bad.txt")
    (tmp_path / "bad.json").write_text("[1, 2.5]")
    with pytest.raises(ValueError, match="entry 1: expected an integer index, got 2.5"):
        read_flagged(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_flagged(tmp_path / "missing.txt")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ValueError, match="binary.txt is not a text file"):
        read_flagged(tmp_path / "binary.txt")


def test_model_files_load_and_pickled_code_is_refused(tmp_path):
    model = create_model("small_cnn", 4, 3)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "m.pt")
    for name in ("m.safetensors", "m.pt"):
        loaded = load_model(tmp_path / name, "small_cnn", 4, 3)
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    torch.save(model, tmp_path / "whole.pt")  # the module object itself: unpickling would run code
    with pytest.raises(ValueError, match="refused"):
        load_model(tmp_path / "whole.pt", "small_cnn", 4, 3)
    with pytest.raises(ValueError, match="does not fit a resnet9 with 4 classes"):
        load_model(tmp_path / "m.safetensors", "resnet9", 4, 3)
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_model(tmp_path / "junk.safetensors", "small_cnn", 4, 3)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt is not a readable model file"):
        load_model(tmp_path / "junk.pt", "small_cnn", 4, 3)


def test_corrective_fix_end_to_end_on_a_benchmark_run(tmp_path, capsys):
    run = trained_run(tmp_path, "0.5")
    flagged = read_flagged(run / "flagged.txt")
    assert len(flagged) == 20
    out = tmp_path / "fixed"
    assert main(["fix", "--model", str(run / "model.safetensors"), "--data", str(run), "--flagged",
                 str(run / "flagged.txt"), "--method", "cf", "--hparams", "{steps: 3}", "--out", str(out),
                 "--quiet", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "triggered images" in printed and "before" in printed
    fresh = create_model("small_cnn", 4, 3)  # the corrected model loads into the original architecture
    from safetensors.torch import load_file
    fresh.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
    record = json.loads((out / "record.json").read_text())
    assert record["flagged"] == 20 and record["benchmark"]["before"]["affected_acc"] >= 0
    assert json.loads((out / "model.json").read_text())["arch"] == "small_cnn"
    for name in ("report.md", "flipped.csv", "figures/accuracy.png", "figures/per-class.png"):
        assert (out / name).stat().st_size > 0, name
    assert "## Before and after" in (out / "report.md").read_text()
    # the backdoor field's names, and DER from its formula on the recorded ASR and C-Acc
    bench = record["benchmark"]
    assert "C-Acc: test accuracy" in printed and "ASR: " in printed and "RA: " in printed
    before, after = bench["before"], bench["after"]
    by_hand = (max(0.0, before["asr"] - after["asr"]) / 100 - max(0.0, before["c_acc"] - after["c_acc"]) / 100
               + 1) / 2
    assert bench["der"] == pytest.approx(by_hand) and bench["clean_label"] is False
    assert f"{by_hand:.3f}" in printed and "DER" in (out / "report.md").read_text()


def test_corrective_fix_with_trigger_synthesis_reports_the_reconstruction(tmp_path, capsys):
    run = trained_run(tmp_path, "0.5")
    out = tmp_path / "fixed"
    assert main(["fix", "--model", str(run / "model.safetensors"), "--data", str(run), "--flagged",
                 str(run / "flagged.txt"), "--method", "trigger_synthesis", "--hparams",
                 "{synth_steps: 5, steps: 4, checks: 2}", "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    notes = json.loads((out / "record.json").read_text())["method_notes"]
    assert set(notes["rounds"][0]["forms"]) == {"mask", "additive", "warp"}
    text = (out / "report.md").read_text()
    assert "## The reconstructed trigger" in text and "attack success of the reconstruction" in text


def test_trigger_synthesis_runs_on_float_images_through_correct(user_setting):
    """Blobs are float images as the model reads them (no 0-255 scale); the flagged samples are class 0's."""
    model, data = user_setting
    _, report = correct(model, data, [0, 4, 8, 12], method="trigger_synthesis",
                        hparams={"synth_steps": 5, "steps": 3, "checks": 1, "form": "mask"}, recipe=TINY,
                        validation=Blobs(40, 1), device="cpu")
    round_ = report["method_notes"]["rounds"][0]
    assert round_["chosen"] == ["mask"] and round_["target"] == 0
    assert 0.0 <= round_["forms"]["mask"]["mask_fraction"] <= 1.0


def test_corrective_fix_names_a_bad_argument(tmp_path, capsys):
    (tmp_path / "f.txt").write_text("1\n")
    code = main(["fix", "--model", str(tmp_path / "none.safetensors"), "--arch", "small_cnn", "--data",
                 "synthetic", "--flagged", str(tmp_path / "f.txt"), "--quiet"])
    assert code == 2 and "none.safetensors does not exist" in capsys.readouterr().err


# --------------------------------------------------------------------------------------- kept from the old API
@pytest.fixture
def probe(monkeypatch):
    """A method that records what it was given and returns the original unchanged."""
    seen = {}

    def run(task, hp):
        seen.update(forget=task.forget_idx.clone(), recipe=task.recipe, retain=task.retain_idx.clone())
        return Unlearned(task.copy_original())

    monkeypatch.setitem(METHODS._entries, "probe", Method("probe", run, {}, {}, "records its task"))
    return seen


def test_a_boolean_mask_is_a_mask_and_the_split_holds_out_unflagged_samples(synthetic, probe):
    model = create_model("small_cnn", synthetic.num_classes, synthetic.in_channels)
    data = (synthetic.train_images, synthetic.train_labels)
    mask = torch.zeros(384, dtype=torch.bool)
    mask[[3, 7, 200]] = True
    _, report = correct(model, data, mask, method="probe", device="cpu")
    assert probe["forget"].tolist() == [3, 7, 200] and report["flagged"] == 3
    assert report["validation"]["size"] == 19  # round(0.05 * 381)
    assert len(probe["retain"]) == 384 - 3 - 19 and not torch.isin(probe["retain"], probe["forget"]).any()


def test_user_data_is_not_augmented_unless_asked(synthetic, probe):
    model = create_model("small_cnn", synthetic.num_classes, synthetic.in_channels)
    args = (model, (synthetic.train_images, synthetic.train_labels), [1, 2])
    correct(*args, method="probe", device="cpu")
    assert (probe["recipe"].crop_padding, probe["recipe"].flip) == (0, False)
    correct(*args, method="probe", device="cpu", augment=True)
    assert (probe["recipe"].crop_padding, probe["recipe"].flip) == (4, True)
    given = Recipe(steps=10, crop_padding=2, flip=True)
    correct(*args, method="probe", device="cpu", recipe=given)
    assert probe["recipe"] == given


class ViewingNet(nn.Module):
    """A user's model that flattens with .view(), which fails on channels_last activations."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.head = nn.LazyLinear(num_classes)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        return self.head(x.view(x.size(0), -1))


def test_correct_keeps_the_users_memory_layout(synthetic):
    model = ViewingNet(synthetic.in_channels, synthetic.num_classes)
    model(synthetic.train_images[:2].float())  # materialise the lazy layer
    fixed, _ = correct(model, (synthetic.train_images, synthetic.train_labels), torch.arange(10), method="cf",
                       hparams={"steps": 3}, recipe=Recipe(steps=10, batch_size=32), device="cpu")
    assert fixed.conv.weight.is_contiguous()


def test_correct_reports_what_ssd_did(synthetic):
    model = create_model("small_cnn", synthetic.num_classes, synthetic.in_channels)
    args = (model, (synthetic.train_images, synthetic.train_labels), torch.arange(32))
    notes = {alpha: correct(*args, method="ssd", hparams={"alpha": alpha, "batch_size": 16}, device="cpu")
             .report["method_notes"] for alpha in (0.0, 1e30)}
    total = sum(p.numel() for p in model.parameters())
    # alpha 0 selects every weight that S_f moves at all; 1e30 only those the data never moves (I_D == 0).
    assert total >= notes[0.0]["dampened_weights"] > notes[1e30]["dampened_weights"] >= 0
    assert notes[0.0]["importance_ratio"] == pytest.approx(notes[1e30]["importance_ratio"])


def test_expand_adds_the_top_suspects_to_the_deletion_set(user_setting, probe):
    from corrective_unlearning import suspects

    model, data = user_setting
    flagged = [0, 4, 8]
    _, report = correct(model, data, flagged, method="probe", expand=5, ranking="embedding",
                        validation=Blobs(20, 3), device="cpu")
    found = suspects(model, data, flagged, ranking="embedding", k=5, device="cpu")
    assert sorted(probe["forget"].tolist()) == sorted(flagged + found.indices.tolist())
    assert report["flagged"] == 3 and report["deletion_set"] == 8 and report["suspects"]["added"] == 5
    assert report["suspects"]["indices"] == found.indices.tolist()
    # accuracies of the flagged samples stay those of the user's flagged ones; the suspects get their own
    assert report["flagged"] == 3 and "added_acc_given" in report["before"]
    with torch.no_grad():
        given = model(data.images[flagged]).argmax(1) == data.labels[flagged]
    assert report["before"]["flagged_acc_given"] == pytest.approx(100.0 * float(given.double().mean()))
    with pytest.raises(ValueError, match="expand: expected a number of suspects >= 0"):
        correct(model, data, flagged, method="probe", expand=-1, device="cpu")
