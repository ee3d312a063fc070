"""``corrective suspects``: the ranking as its own command (a benchmark run folder and a user's .npz), its files, and
its refusal to overwrite."""
from __future__ import annotations

import csv
import json

import numpy as np
import torch
from safetensors.torch import save_file

from corrective_unlearning.cli import main
from corrective_unlearning.fix import read_flagged
from corrective_unlearning.models import create_model


def test_corrective_suspects_on_a_benchmark_run_writes_csv_report_and_figure(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["train", "--dataset", "synthetic", "--manipulation", "poison", "--n", "40", "--quiet",
                 "--out", str(runs), "--flag", "0.5", "dataset.val_size=16"]) == 0
    run = next(runs.iterdir())
    flagged = read_flagged(run / "flagged.txt")
    out = tmp_path / "s"
    args = ["suspects", "--model", str(run / "model.safetensors"), "--data", str(run), "--flagged",
            str(run / "flagged.txt"), "--ranking", "embedding", "--k", "auto", "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    assert "suspects selected" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "suspects.csv")))
    summary = json.loads((out / "suspects.json").read_text())
    assert len(rows) == summary["candidates"] and not {int(r["index"]) for r in rows} & set(flagged)
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    scores = [float(r["score_embedding"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert sum(int(r["selected"]) for r in rows) == summary["k"] == summary["auto"]["k"]
    assert summary["against_truth"]["undiscovered"] == 20  # the run's S_m \ S_f
    report = (out / "report.md").read_text()
    assert "k auto" in report and "Self-checks" in report and "figures/suspects-histogram.png" in report
    assert (out / "figures" / "suspects-histogram.png").stat().st_size > 0
    # an earlier output is replaced only with --force; a folder with other files never
    assert main(args) == 2 and "--force" in capsys.readouterr().err
    assert main([*args, "--force", "--k", "7"]) == 0
    assert sum(int(r["selected"]) for r in csv.DictReader(open(out / "suspects.csv"))) == 7
    (out / "mine.txt").write_text("x")
    assert main([*args, "--force"]) == 2 and "did not write" in capsys.readouterr().err


def test_corrective_suspects_takes_a_users_npz_and_a_detector(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8, generator=g)
    np.savez(tmp_path / "data.npz", images=images.numpy(), labels=(np.arange(64) % 4))
    model = create_model("small_cnn", 4, 3)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    (tmp_path / "flagged.txt").write_text("1\n5\n9\n")
    out = tmp_path / "s"
    assert main(["suspects", "--model", str(tmp_path / "m.safetensors"), "--arch", "small_cnn", "--data",
                 str(tmp_path / "data.npz"), "--flagged", str(tmp_path / "flagged.txt"), "--ranking", "strip",
                 "--params", "{strip: {n: 3}}", "--k", "all", "--out", str(out), "--device", "cpu"]) == 0
    rows = list(csv.DictReader(open(out / "suspects.csv")))
    assert len(rows) == 61 and all(int(r["selected"]) for r in rows)
    assert main(["suspects", "--model", str(tmp_path / "m.safetensors"), "--arch", "small_cnn", "--data",
                 str(tmp_path / "data.npz"), "--flagged", str(tmp_path / "flagged.txt"), "--ranking", "knn",
                 "--out", str(tmp_path / "t")]) == 2
    assert "--ranking" in capsys.readouterr().err
