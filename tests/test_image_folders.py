"""Image folders of class subfolders for --data, --validation and correct(), their sorted file list, and --flagged
as a list of image paths: folders written here, corrected end to end."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from corrective_unlearning.cli import main
from corrective_unlearning.inputs import (flagged_from_paths, image_size, is_path_list, read_image_folder,
                                          training_data)
from corrective_unlearning.models import create_model

CLASSES = ("cat", "dog", "owl")


def _write_folder(root, per_class: int = 6, size=(8, 8), seed: int = 0, odd_size: bool = False):
    rng = np.random.default_rng(seed)
    written = []
    for c, name in enumerate(reversed(CLASSES)):  # written out of order: reading sorts
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in reversed(range(per_class)):
            pixels = rng.integers(0, 60, size=(*size, 3), dtype=np.uint8)
            pixels[..., 2 - c] = 250
            shape = (size[0] * 2, size[1] * 2) if odd_size and i == 1 else size
            Image.fromarray(pixels).resize((shape[1], shape[0])).save(root / name / f"img{i:02d}.png")
            written.append(f"{name}/img{i:02d}.png")
    (root / ".hidden").mkdir()
    (root / "cat" / "notes.txt").write_text("not an image")
    return written


def test_reading_sorts_classes_and_files_and_resizes(tmp_path):
    _write_folder(tmp_path / "train", odd_size=True)
    folder = read_image_folder(tmp_path / "train")
    assert folder.classes == CLASSES
    assert folder.files[:2] == ["cat/img00.png", "cat/img01.png"] and folder.files[6] == "dog/img00.png"
    assert folder.labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    assert folder.images.shape == (18, 3, 8, 8) and folder.images.dtype == torch.uint8  # img01 (16x16) resized to the first image's 8x8
    assert read_image_folder(tmp_path / "train", size="4x6").images.shape == (18, 3, 4, 6)
    assert image_size(5) == (5, 5) and image_size("32x48") == (32, 48)
    with pytest.raises(ValueError, match="expected a size such as 32"):
        image_size("big")
    data = training_data(tmp_path / "train")
    assert data.classes == CLASSES and data.files == folder.files and data.num_classes == 3


def test_folder_errors_are_one_line(tmp_path):
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(ValueError, match="expected one subfolder per class .* got 1 image file"):
        read_image_folder(tmp_path / "flat")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="hold no image files"):
        read_image_folder(tmp_path / "empty")
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"a/broken.png is not a readable image"):
        read_image_folder(tmp_path / "bad")
    _write_folder(tmp_path / "train")
    (tmp_path / "val" / "zebra").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "zebra" / "z.png")
    with pytest.raises(ValueError, match="not among the training data's classes"):
        training_data(tmp_path / "val", like=training_data(tmp_path / "train"))


def test_flagged_paths_resolve_relative_and_absolute(tmp_path):
    _write_folder(tmp_path / "train")
    files = read_image_folder(tmp_path / "train").files
    listing = tmp_path / "flagged.txt"
    listing.write_text(f"# bad ones\ndog/img03.png\n{tmp_path / 'train' / 'cat' / 'img05.png'}\n\n")
    assert is_path_list(listing)
    assert flagged_from_paths(listing, tmp_path / "train", files) == [files.index("dog/img03.png"), 5]
    listing.write_text("dog/img99.png\n")
    with pytest.raises(ValueError, match="line 1: expected an image of the folder .* 'dog/img99.png'"):
        flagged_from_paths(listing, tmp_path / "train", files)
    listing.write_text("dog/img01.png\ndog/img01.png\n")
    with pytest.raises(ValueError, match="already on line 1"):
        flagged_from_paths(listing, tmp_path / "train", files)
    (tmp_path / "idx.txt").write_text("1\n2\n")
    assert not is_path_list(tmp_path / "idx.txt")


def _model(tmp_path):
    torch.manual_seed(0)
    model = create_model("small_cnn", 3, 3)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    return tmp_path / "m.safetensors"


@pytest.mark.parametrize("form", ["paths", "indices"])
def test_an_image_folder_goes_through_fix(tmp_path, capsys, monkeypatch, form):
    """Done when: an image-folder dataset written by the test goes through ``corrective fix``, and the flagged
    indices resolve to the files the test flagged."""
    from corrective_unlearning import fix

    seen = {}
    real = fix.correct

    def spy(model, data, flagged, **options):  # the indices fix corrects with, and the images they name
        seen["flagged"], seen["data"] = list(flagged), data
        return real(model, data, flagged, **options)

    monkeypatch.setattr(fix, "correct", spy)
    _write_folder(tmp_path / "train", per_class=8)
    _write_folder(tmp_path / "val", per_class=2, seed=1, size=(12, 12))  # resized to the training size
    chosen = ["dog/img02.png", "owl/img05.png", "cat/img07.png"]
    files = read_image_folder(tmp_path / "train").files
    if form == "paths":
        (tmp_path / "flagged.txt").write_text("\n".join(chosen) + "\n")
    else:
        (tmp_path / "flagged.txt").write_text("".join(f"{files.index(c)}\n" for c in chosen))
    out = tmp_path / "fixed"
    code = main(["fix", "--model", str(_model(tmp_path)), "--arch", "small_cnn", "--data", str(tmp_path / "train"),
                 "--validation", str(tmp_path / "val"), "--flagged", str(tmp_path / "flagged.txt"), "--method", "cf",
                 "--hparams", "{steps: 2}", "--out", str(out), "--quiet", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    with open(out / "files.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == files and len(rows) == 24
    assert rows[8] == {"index": "8", "path": "dog/img00.png", "class": "dog"}
    by_index = {int(r["index"]): r["path"] for r in rows}
    assert sorted(by_index[i] for i in seen["flagged"]) == sorted(chosen)
    assert json.loads((out / "record.json").read_text())["flagged"] == 3
    # index i is the i-th file's image, as read from disk, with its class folder's label
    train = read_image_folder(tmp_path / "train")
    for i in seen["flagged"]:
        assert torch.equal(seen["data"].images[i], train.images[train.files.index(by_index[i])])
        assert CLASSES[int(seen["data"].labels[i])] == by_index[i].split("/")[0]
    card = json.loads((out / "model.json").read_text())
    assert card["classes"] == list(CLASSES) and card["image_size"] == [8, 8] and card["files"] == "files.csv"


def test_flagged_paths_need_an_image_folder(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    np.savez(tmp_path / "data.npz", images=torch.randint(0, 256, (12, 3, 8, 8), generator=g).to(torch.uint8).numpy(),
             labels=np.arange(12) % 3)
    (tmp_path / "flagged.txt").write_text("cat/img01.png\n")
    assert main(["fix", "--model", str(_model(tmp_path)), "--arch", "small_cnn", "--data", str(tmp_path / "data.npz"),
                 "--flagged", str(tmp_path / "flagged.txt"), "--out", str(tmp_path / "o"), "--quiet",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "lists image paths, but --data is not an image folder" in err and "\n" not in err


def test_correct_takes_image_folders(tmp_path):
    from corrective_unlearning import correct

    _write_folder(tmp_path / "train", per_class=8)
    _write_folder(tmp_path / "val", per_class=2, seed=1)
    torch.manual_seed(0)
    result = correct(create_model("small_cnn", 3, 3), str(tmp_path / "train"), [1, 9, 17], method="cf",
                     hparams={"steps": 2}, validation=str(tmp_path / "val"), device="cpu")
    assert result.report.num_classes == 3


def test_suspects_reads_an_image_folder_and_writes_its_file_list(tmp_path, capsys):
    _write_folder(tmp_path / "train", per_class=8)
    (tmp_path / "flagged.txt").write_text("dog/img02.png\nowl/img05.png\n")
    out = tmp_path / "sus"
    assert main(["suspects", "--model", str(_model(tmp_path)), "--arch", "small_cnn", "--data",
                 str(tmp_path / "train"), "--image-size", "8", "--flagged", str(tmp_path / "flagged.txt"), "--k", "3",
                 "--out", str(out), "--device", "cpu"]) == 0, capsys.readouterr().err
    with open(out / "files.csv") as f:
        assert [r["path"] for r in csv.DictReader(f)] == read_image_folder(tmp_path / "train").files


def test_image_size_needs_an_image_folder_and_a_dataset_name_wins_over_a_folder(tmp_path, capsys, monkeypatch):
    np.savez(tmp_path / "data.npz", images=np.zeros((12, 3, 8, 8), np.uint8), labels=np.arange(12) % 3)
    (tmp_path / "flagged.txt").write_text("1\n")
    assert main(["fix", "--model", str(_model(tmp_path)), "--arch", "small_cnn", "--data", str(tmp_path / "data.npz"),
                 "--image-size", "16", "--flagged", str(tmp_path / "flagged.txt"), "--out", str(tmp_path / "o"),
                 "--quiet", "--device", "cpu"]) == 2
    assert "--image-size 16: expected --data to be an image folder" in capsys.readouterr().err
    _write_folder(tmp_path / "synthetic", per_class=2)
    monkeypatch.chdir(tmp_path)
    assert training_data("synthetic").files is None  # the registered dataset
    assert training_data("./synthetic").classes == CLASSES  # the folder
