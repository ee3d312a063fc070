"""Trust: `corrective fix` and `corrective train` never overwrite what a user has, and every bad input is refused
with a one-line message (what was expected, what came) before any work starts."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from corrective_unlearning import correct, write_report
from corrective_unlearning.cli import main
from corrective_unlearning.fix import Correction, load_model, read_flagged
from corrective_unlearning.inputs import training_data
from corrective_unlearning.models import create_model
from corrective_unlearning.training import Recipe
from user_models import TinyNet

TINY = Recipe(steps=10, batch_size=32, crop_padding=0, flip=False)




def _blobs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = torch.randn(n, 3, 8, 8, generator=g) * 0.3
    for i, c in enumerate(labels.tolist()):
        r, q = divmod(c, 2)
        images[i, :, 4 * r:4 * r + 4, 4 * q:4 * q + 4] += 2.0
    return images, labels


# ------------------------------------------------------------------------------------------- a user's files
@pytest.fixture
def user(tmp_path):
    """A user's model (small_cnn safetensors + sidecar) in its own folder, data as .npz, a flagged list."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8, generator=g)
    np.savez(tmp_path / "data.npz", images=images.numpy(), labels=(np.arange(64) % 4))
    (tmp_path / "model").mkdir()
    model = create_model("small_cnn", 4, 3)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model" / "model.safetensors"))
    (tmp_path / "model" / "model.json").write_text(json.dumps({"arch": "small_cnn"}))
    (tmp_path / "flagged.txt").write_text("1\n5\n9\n")
    return tmp_path


def _fix(user, out, *extra):
    return main(["fix", "--model", str(user / "model" / "model.safetensors"), "--data", str(user / "data.npz"),
                 "--flagged", str(user / "flagged.txt"), "--method", "cf", "--hparams", "{steps: 2}",
                 "--out", str(out), "--quiet", "--device", "cpu", *extra])


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if fix gets as far as correcting."""
    from corrective_unlearning import fix

    def refuse(*args, **kwargs):
        raise AssertionError("the correction started although the input should have been refused")

    monkeypatch.setattr(fix, "correct", refuse)


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -------------------------------------------------------------------------------------- 1. nothing overwritten
def test_fix_refuses_the_folder_of_its_model(user, capsys, no_work):
    before = _snapshot(user / "model")
    assert _fix(user, user / "model") == 2
    err = _error(capsys)
    assert "--out" in err and "folder of --model" in err and str(user / "model") in err
    assert _snapshot(user / "model") == before


def test_fix_refuses_the_run_folder_it_reads(user, capsys, no_work):
    run = user / "run"
    run.mkdir()
    (run / "record.json").write_text(json.dumps({"kind": "original"}))
    assert main(["fix", "--model", str(user / "model" / "model.safetensors"), "--data", str(run), "--flagged",
                 str(user / "flagged.txt"), "--out", str(run), "--quiet"]) == 2
    assert "is the --data run folder" in _error(capsys)
    # an input inside --out: replacing --out would remove it
    (user / "deep" / "inner").mkdir(parents=True)
    (user / "deep" / "inner" / "m.safetensors").write_bytes((user / "model" / "model.safetensors").read_bytes())
    assert main(["fix", "--model", str(user / "deep" / "inner" / "m.safetensors"), "--arch", "small_cnn", "--data",
                 str(user / "data.npz"), "--flagged", str(user / "flagged.txt"), "--out", str(user / "deep"),
                 "--quiet", "--force"]) == 2
    assert f"--out {user / 'deep'} holds --model" in _error(capsys)


def test_fix_refuses_an_empty_out_a_file_and_an_unwritable_place(user, capsys, no_work):
    assert _fix(user, "") == 2
    assert "--out: expected a folder, got '' (it would write into the current folder)" in _error(capsys)
    (user / "taken").write_text("mine")
    assert _fix(user, user / "taken") == 2
    assert f"--out {user / 'taken'} is a file; expected a folder" in _error(capsys)
    assert _fix(user, user / "taken" / "fixed") == 2
    assert f"--out {user / 'taken' / 'fixed'} cannot be created: {user / 'taken'} is a file" in _error(capsys)
    assert (user / "taken").read_text() == "mine"


def test_fix_never_replaces_foreign_files_even_with_force(user, capsys, no_work):
    mine = user / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (mine / "model.safetensors").write_bytes(b"my own model")
    for extra in ((), ("--force",)):
        assert _fix(user, mine, *extra) == 2
        err = _error(capsys)
        assert "holds files fix did not write (notes.txt)" in err and "even with --force" in err
    (mine / "notes.txt").unlink()  # a model.safetensors alone is not an earlier fix either
    assert _fix(user, mine, "--force") == 2
    assert "holds model.safetensors but no earlier fix (its record.json)" in _error(capsys)
    assert (mine / "model.safetensors").read_bytes() == b"my own model"


def test_a_second_fix_is_refused_and_force_replaces_the_first_whole(user, capsys):
    out = user / "fixed"
    assert _fix(user, out) == 0
    record = json.loads((out / "record.json").read_text())
    assert record["written_by"] == "corrective fix"
    assert json.loads((out / "model.json").read_text())["written_by"] == "corrective fix"
    (out / "figures" / "candidates.png").write_bytes(b"stale: an earlier auto run's")
    capsys.readouterr()
    assert _fix(user, out) == 2
    assert f"--out {out} holds an earlier fix (method cf); pass --force to replace it" in _error(capsys)
    assert _fix(user, out, "--force") == 0
    assert not (out / "figures" / "candidates.png").exists()  # the earlier fix went whole
    assert (out / "model.safetensors").exists() and (out / "report.md").exists()


def test_write_report_does_not_replace_an_earlier_fix_unless_forced(tmp_path):
    images, labels = _blobs(60)
    result = correct(TinyNet(), (images, labels), [0, 4], method="cf", hparams={"steps": 2}, recipe=TINY,
                     device="cpu")
    write_report(result, tmp_path / "fixed")
    with pytest.raises(ValueError, match="holds an earlier fix"):
        write_report(result, tmp_path / "fixed")
    write_report(result, tmp_path / "fixed", force=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match=r"holds files fix did not write \(a.txt\)"):
        write_report(result, tmp_path / "other", force=True)


RUN = "train-synthetic-small_cnn-poison-n20-seed0"


def _train(out, *extra):
    return main(["train", "--dataset", "synthetic", "--n", "20", "--out", str(out), "--quiet", "recipe.steps=10",
                 *extra])


def test_train_refuses_to_replace_a_different_run_without_force(tmp_path, capsys):
    assert _train(tmp_path) == 0
    folder = tmp_path / RUN
    first = _snapshot(folder)
    assert _train(tmp_path) == 0  # the same run again: allowed, same files
    capsys.readouterr()
    assert _train(tmp_path, "recipe.lr=0.05") == 2
    err = _error(capsys)
    assert f"{folder} holds a different run (recipe.lr" in err and "pass --force to replace it" in err
    assert _snapshot(folder).keys() == first.keys()
    assert json.loads((folder / "record.json").read_text())["config"]["recipe"]["lr"] != 0.05
    (folder / "notes.txt").write_text("mine")
    assert _train(tmp_path, "recipe.lr=0.05", "--force") == 2
    assert "holds files train did not write (notes.txt)" in _error(capsys)
    (folder / "notes.txt").unlink()
    assert _train(tmp_path, "recipe.lr=0.05", "--force") == 0
    assert json.loads((folder / "record.json").read_text())["config"]["recipe"]["lr"] == 0.05


def test_train_refuses_a_folder_that_is_not_a_run(tmp_path, capsys, monkeypatch):
    from corrective_unlearning import experiment

    monkeypatch.setattr(experiment, "train_original", lambda *a, **k: pytest.fail("trained before refusing"))
    (tmp_path / RUN).mkdir()
    (tmp_path / RUN / "model.safetensors").write_bytes(b"someone else's")
    assert _train(tmp_path) == 2
    assert "holds files that are not a 'corrective train' run's (model.safetensors)" in _error(capsys)
    (tmp_path / "file").write_text("x")
    assert _train(tmp_path / "file") == 2
    assert "cannot be created: " + str(tmp_path / "file") + " is a file" in _error(capsys)


# ---------------------------------------------------------------------------------- 2. validated before work
@pytest.mark.parametrize("value", ["-1", "nan"])
def test_max_val_drop_is_checked_before_any_work(user, capsys, no_work, value):
    assert _fix(user, user / "fixed", "--max-val-drop", value) == 2
    assert _error(capsys).endswith(f"--max-val-drop: expected points of validation accuracy >= 0, got {value}")
    images, labels = _blobs(40)
    with pytest.raises(ValueError, match="max_val_drop: expected points of validation accuracy >= 0, got -1"):
        correct(TinyNet(), (images, labels), [1], max_val_drop=-1, device="cpu")


def test_malformed_hparams_are_one_line_naming_the_option(user, capsys, no_work):
    assert main(["fix", "--model", str(user / "model" / "model.safetensors"), "--data", str(user / "data.npz"),
                 "--flagged", str(user / "flagged.txt"), "--hparams", "{steps: [3", "--out",
                 str(user / "fixed"), "--quiet"]) == 2
    err = _error(capsys)
    assert "--hparams: not valid YAML" in err and "{steps: [3" in err
    assert main(["fix", "--model", str(user / "model" / "model.safetensors"), "--data", str(user / "data.npz"),
                 "--flagged", str(user / "flagged.txt"), "--method", "cf", "--hparams", "{stepz: 3}", "--out",
                 str(user / "fixed"), "--quiet"]) == 2
    assert "stepz" in _error(capsys)


@pytest.mark.parametrize("rate", ["-0.5", "1.5", "0", "nan"])
def test_train_flag_rate_outside_0_1_is_refused(tmp_path, capsys, monkeypatch, rate):
    from corrective_unlearning import experiment

    monkeypatch.setattr(experiment, "train_original", lambda *a, **k: pytest.fail("trained before refusing"))
    assert _train(tmp_path, "--flag", rate) == 2
    assert f"--flag: expected a discovery rate in (0, 1], got {rate}" in _error(capsys)


def test_an_unusable_cache_is_refused_before_training(tmp_path, capsys, monkeypatch):
    from corrective_unlearning import experiment
    from corrective_unlearning.cache import check_cache_writable

    monkeypatch.setattr(experiment, "train_original", lambda *a, **k: pytest.fail("trained before refusing"))
    blocker = tmp_path / "cache-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CORRECTIVE_CACHE_DIR", str(blocker))
    with pytest.raises(ValueError, match="is not writable"):
        check_cache_writable()
    assert _train(tmp_path / "runs") == 2
    err = _error(capsys)
    assert f"cache folder {blocker} ($CORRECTIVE_CACHE_DIR) is not writable" in err
    assert "set CORRECTIVE_CACHE_DIR to a folder you can write to, or pass --no-cache" in err
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------- 3. auto skips what cannot run
def test_auto_skips_a_candidate_the_model_does_not_support(monkeypatch, tmp_path):
    from corrective_unlearning.fix import auto

    monkeypatch.setattr(auto, "CANDIDATES", {"rem": {"grid": {"lr": [0.001, 0.005]}, "params": {"steps": 2}},
                                             "cf": {"grid": {"lr": [0.01]}, "params": {"steps": 2}}})
    images, labels = _blobs(80)
    fixed, report = correct(TinyNet(), (images, labels), [0, 4, 8], recipe=TINY, device="cpu")
    assert report["method"] == "cf" and [r["method"] for r in report["candidates"]] == ["cf"]
    (skipped,) = report["skipped_candidates"]
    assert skipped["method"] == "rem" and skipped["settings"] == 2
    assert "cannot add spare capacity" in skipped["reason"] and "TinyNet" in skipped["reason"]
    text = write_report(Correction(fixed, report), tmp_path / "fixed").read_text()
    assert "Skipped: **rem**" in text and "cannot add spare capacity" in text


def test_auto_says_so_when_no_candidate_can_run(monkeypatch):
    from corrective_unlearning.fix import auto

    monkeypatch.setattr(auto, "CANDIDATES", {"rem": {"grid": {"lr": [0.001]}, "params": {"steps": 2}}})
    images, labels = _blobs(80)
    with pytest.raises(ValueError, match=r"method auto: no candidate can run on this model \(rem: "):
        correct(TinyNet(), (images, labels), [0, 4, 8], recipe=TINY, device="cpu")


# ----------------------------------------------------------------------------------------- 4. flagged files
@pytest.mark.parametrize("name, text, expected", [
    ("first.csv", "5\n7\n", [5, 7]),  # a first row that is a number is data, not a header
    ("bom.csv", "\ufeffindex\n5\n7\n", [5, 7]),
    ("bom.txt", "\ufeff5\n7\n", [5, 7]),
    ("semicolon.csv", "5;7\n", [5]),
    ("semicolon-header.csv", "name;index\na;5\nb;7\n", [5, 7]),
    ("tab.csv", "name\tindex\na\t5\nb\t7\n", [5, 7]),
    ("blank-lines.csv", "index\n5\n\n7\n\n", [5, 7]),
])
def test_flagged_csv_forms_are_read(tmp_path, name, text, expected):
    (tmp_path / name).write_text(text, encoding="utf-8")
    assert read_flagged(tmp_path / name) == expected


@pytest.mark.parametrize("name, text, message", [
    ("float.csv", "5.0\n7\n", "float.csv, line 1: expected an integer index, got '5.0'"),
    ("half.txt", "3\n5.5\n", "half.txt, line 2: expected an integer index, got '5.5'"),
    ("word.csv", "index\n3\nabc\n", "word.csv, line 3: expected an integer index, got 'abc'"),
    ("float.json", "[1, 5.0]", "float.json, entry 1: expected an integer index, got 5.0"),
    ("short.csv", "name,index\na,3\nb\n", "short.csv, line 3: expected a value in column 'index' (column 2), got "
                                          "a row of 1 field"),
    ("empty-field.csv", "name,index\na,3\nb,\n", "empty-field.csv, line 3: expected a value in column 'index' "
                                                 "(column 2), got an empty field"),
    ("twice.txt", "3\n4\n3\n", "twice.txt, line 3: index 3 is already on line 1"),
])
def test_flagged_file_errors_name_the_file_and_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError) as caught:
        read_flagged(tmp_path / name)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_flagged_file_out_of_range_names_the_line(tmp_path, user, capsys, no_work):
    (tmp_path / "f.txt").write_text("3\n4\n64\n")
    with pytest.raises(ValueError, match=r"f.txt, line 3: index 64 is outside \[0, 63\] \(64 training samples\)"):
        read_flagged(tmp_path / "f.txt", n=64)
    (user / "flagged.txt").write_text("1\n\n70\n")
    assert _fix(user, user / "fixed") == 2
    assert "flagged.txt, line 3: index 70 is outside [0, 63]" in _error(capsys)
    (user / "flagged.txt").write_text("# nothing found yet\n")
    assert _fix(user, user / "fixed") == 2
    assert f"--flagged {user / 'flagged.txt'} holds no index" in _error(capsys)


# --------------------------------------------------------------------------------------------------- 5. smaller
class FloatLabels(torch.utils.data.Dataset):
    def __init__(self, label):
        self.label = label

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.zeros(3, 8, 8), self.label


@pytest.mark.parametrize("label", [3.7, 2.0, torch.tensor(1.5), np.float32(1.0)])
def test_float_labels_in_a_dataset_are_refused_as_in_the_pair_form(label):
    with pytest.raises(ValueError, match=r"train labels: item 0's label is .* \(float\); expected an integer class "
                                         r"index"):
        correct(TinyNet(), FloatLabels(label), [1], method="cf", device="cpu")


def test_float_images_on_a_0_255_scale_are_refused_unless_mean_and_std_are_given():
    images, labels = _blobs(60)
    scaled = (images - images.min()) / (images.max() - images.min()) * 255
    with pytest.raises(ValueError, match=r"train images: float values in \[0, 255(\.0)?\] look like a 0-255 "
                                         r"scale.*pass uint8 images.*or mean= and std="):
        correct(TinyNet(), (scaled, labels), [1], method="cf", device="cpu")
    # explicit mean/std: taken as given, (x - mean) / std on the images' own scale
    _, report = correct(TinyNet(), (scaled, labels), [1], method="cf", hparams={"steps": 1}, recipe=TINY,
                        mean=(127.5,) * 3, std=(64.0,) * 3, device="cpu")
    assert report["flagged"] == 1
    with pytest.raises(ValueError, match="validation images: float values in"):
        correct(TinyNet(), (images, labels), [1], method="cf", device="cpu", validation=(scaled[:8], labels[:8]))


def test_too_few_unflagged_samples_for_a_validation_split_say_so():
    images, labels = _blobs(5)
    with pytest.raises(ValueError, match=r"5 of the 5 training samples are flagged, none left unflagged to hold out "
                                         r"a validation split: pass validation="):
        correct(TinyNet(), (images, labels), list(range(5)), method="cf", device="cpu")
    with pytest.raises(ValueError, match=r"4 unflagged training samples are too few to hold out the default 5% "
                                         r"validation split \(it rounds to 0\): pass validation="):
        correct(TinyNet(), (images, labels), [0], method="cf", device="cpu")
    with pytest.raises(ValueError, match=r"val_size: expected 1 to 3 held-out samples \(of the 4 unflagged\), got 9"):
        correct(TinyNet(), (images, labels), [0], method="cf", device="cpu", val_size=9)


def test_a_set_of_flagged_indices_is_taken_sorted(monkeypatch):
    from corrective_unlearning.methods import METHODS, Method, Unlearned

    seen = {}

    def probe(task, hp):
        seen["forget"] = task.forget_idx.tolist()
        return Unlearned(task.copy_original())

    monkeypatch.setitem(METHODS._entries, "probe", Method("probe", probe, {}, {}, "records its task"))
    images, labels = _blobs(60)
    correct(TinyNet(), (images, labels), {9, 2, 5}, method="probe", device="cpu")
    assert seen["forget"] == [2, 5, 9]


def test_a_folder_as_model_and_a_garbage_npz_are_one_line_errors(user, capsys):
    assert main(["fix", "--model", str(user / "model"), "--data", str(user / "data.npz"), "--flagged",
                 str(user / "flagged.txt"), "--out", str(user / "fixed"), "--quiet"]) == 2
    err = _error(capsys)
    assert f"--model {user / 'model'} is a folder; expected a model file" in err
    assert str(user / "model" / "model.safetensors") in err  # the file it probably meant
    (user / "garbage.npz").write_bytes(b"not an archive at all")
    assert main(["fix", "--model", str(user / "model" / "model.safetensors"), "--data", str(user / "garbage.npz"),
                 "--flagged", str(user / "flagged.txt"), "--out", str(user / "fixed"), "--quiet"]) == 2
    err = _error(capsys)
    assert f"{user / 'garbage.npz'} is not an .npz archive" in err and "allow_pickle" not in err
    import zipfile
    with zipfile.ZipFile(user / "junk.npz", "w") as z:
        z.writestr("images.npy", b"junk")
        z.writestr("labels.npy", b"junk")
    assert main(["fix", "--model", str(user / "model" / "model.safetensors"), "--data", str(user / "junk.npz"),
                 "--flagged", str(user / "flagged.txt"), "--out", str(user / "fixed"), "--quiet"]) == 2
    assert f"{user / 'junk.npz'}: array 'images' is not a numpy array" in _error(capsys)


def test_a_state_dict_that_does_not_fit_names_the_keys_and_shapes(tmp_path):
    model = create_model("small_cnn", 10, 3)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "ten.safetensors"))
    with pytest.raises(ValueError) as caught:
        load_model(tmp_path / "ten.safetensors", "small_cnn", 4, 3)
    message = str(caught.value)
    head = [k for k, v in model.state_dict().items() if v.shape and v.shape[0] == 10][-1]
    assert "does not fit a small_cnn with 4 classes" in message and "\n" not in message
    assert f"{head}: file [10" in message and "model [4" in message


def test_a_dataparallel_prefix_is_stripped_and_said(tmp_path):
    model = create_model("small_cnn", 4, 3)
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "dp.pt")
    with pytest.warns(UserWarning, match="key prefix 'module.' .*DataParallel.* stripped"):
        loaded = load_model(tmp_path / "dp.pt", "small_cnn", 4, 3)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    torch.save({f"module.{k}": v for k, v in create_model("small_cnn", 10, 3).state_dict().items()},
               tmp_path / "dp10.pt")
    with pytest.raises(ValueError, match=r"key prefix 'module.' .*stripped.*file \[10"):
        load_model(tmp_path / "dp10.pt", "small_cnn", 4, 3)


def test_fix_reads_validation_from_an_npz(user, capsys):
    """Regression: --validation was read into a form correct() then refused ("expected a torch Dataset")."""
    np.savez(user / "val.npz", images=np.zeros((12, 3, 16, 16), dtype=np.uint8), labels=np.arange(12) % 4)
    assert _fix(user, user / "fixed", "--validation", str(user / "val.npz")) == 0
    assert json.loads((user / "fixed" / "record.json").read_text())["validation"]["size"] == 12


def test_a_dataset_archive_is_read_as_its_training_split(tmp_path):
    """One .npz layout for every command: the ``tensors`` dataset's archive (train_images, train_labels,
    test_images, test_labels) is also practitioner data, read as its training split; the test split is never
    touched."""
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (12, 1, 8, 8), generator=g, dtype=torch.uint8)
    test = torch.randint(0, 256, (5, 1, 8, 8), generator=g, dtype=torch.uint8)
    np.savez(tmp_path / "dataset.npz", train_images=train.numpy(), train_labels=np.arange(12) % 3,
             test_images=test.numpy(), test_labels=np.arange(5) % 3)
    data = training_data(str(tmp_path / "dataset.npz"))
    assert torch.equal(data.images, train) and data.labels.tolist() == [i % 3 for i in range(12)]
    np.savez(tmp_path / "neither.npz", x=train.numpy())
    with pytest.raises(ValueError, match="'images' and 'labels'.*or 'train_images' and 'train_labels'"):
        training_data(str(tmp_path / "neither.npz"))
