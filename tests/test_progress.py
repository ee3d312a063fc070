"""Progress bars: tqdm on a terminal, plain periodic lines anywhere else (a log, a pipe), nothing when disabled."""
from __future__ import annotations

import io

import torch

from corrective_unlearning.models import create_model
from corrective_unlearning.runtime import Runtime
from corrective_unlearning.training import ImageBank, Recipe, train


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_the_bar_prints_a_plain_line_at_each_tenth():
    from corrective_unlearning.progress import PlainProgress, progress_bar

    stream = io.StringIO()
    bar = progress_bar(100, "train", True, file=stream)
    assert isinstance(bar, PlainProgress)
    for i in range(20):
        bar.set_postfix(loss=f"{i:.1f}")
        bar.update(5)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 10
    assert lines[3].startswith("train: 40/100 (40%) ") and lines[3].endswith(" loss=7.0")
    assert lines[-1].startswith("train: 100/100 (100%)")


def test_between_tenths_a_line_at_most_every_interval_and_one_on_close():
    from corrective_unlearning.progress import progress_bar

    stream = io.StringIO()
    bar = progress_bar(1000, "grid (local)", True, file=stream, interval=0)
    bar.update(1)
    bar.set_postfix_str("last cf: FAILED")
    bar.update(2)
    assert stream.getvalue().splitlines()[-1].startswith("grid (local): 3/1000 (0%) ")
    assert stream.getvalue().splitlines()[-1].endswith("last cf: FAILED")
    quiet = io.StringIO()
    bar = progress_bar(1000, "x", True, file=quiet, interval=3600)
    bar.update(7)
    assert quiet.getvalue() == ""
    bar.close()
    assert quiet.getvalue().startswith("x: 7/1000 (1%)")
    bar.close()
    assert len(quiet.getvalue().splitlines()) == 1


def test_iterating_a_plain_bar_counts_each_item():
    from corrective_unlearning.progress import progress_bar

    stream = io.StringIO()
    items = list(enumerate(progress_bar(None, "auto: candidates", True, iterable=["a", "b", "c"], file=stream)))
    assert items == [(0, "a"), (1, "b"), (2, "c")]
    assert stream.getvalue().splitlines()[-1].startswith("auto: candidates: 3/3 (100%)")


def test_on_a_terminal_it_is_tqdm_and_disabled_it_prints_nothing():
    from tqdm.std import tqdm

    from corrective_unlearning.progress import progress_bar

    terminal = _Terminal()
    bar = progress_bar(10, "train", True, file=terminal)
    assert isinstance(bar, tqdm)
    bar.update(10)
    bar.close()
    assert "\r" in terminal.getvalue()
    for stream in (io.StringIO(), _Terminal()):
        bar = progress_bar(10, "train", False, file=stream)
        bar.update(10)
        bar.close()
        assert stream.getvalue() == ""


def test_training_on_a_log_prints_plain_lines(synthetic, capsys):
    runtime = Runtime(device=torch.device("cpu"), progress=True)
    bank = ImageBank(synthetic.train_images, synthetic.mean, synthetic.std, runtime.device)
    torch.manual_seed(0)
    model = runtime.prepare(create_model("small_cnn", synthetic.num_classes, synthetic.in_channels))
    train(model, bank, synthetic.train_labels, torch.arange(128), Recipe(steps=20, batch_size=32, flip=False),
          seed=0, runtime=runtime)
    err = capsys.readouterr().err
    assert "\r" not in err and "train: 20/20 (100%)" in err and "loss=" in err


def test_corrective_fix_on_a_log_prints_plain_stage_lines(tmp_path, capsys):
    """``corrective fix`` without --quiet, its output captured (no terminal): stage lines, no carriage returns."""
    from corrective_unlearning.cli import main

    runs = tmp_path / "runs"
    assert main(["train", "--dataset", "synthetic", "--n", "20", "--quiet", "--out", str(runs), "--flag", "0.5",
                 "dataset.val_size=16", "recipe.steps=5"]) == 0
    run = next(runs.iterdir())
    capsys.readouterr()
    assert main(["fix", "--model", str(run / "model.safetensors"), "--data", str(run), "--flagged",
                 str(run / "flagged.txt"), "--method", "cf", "--hparams", "{steps: 2}", "--out",
                 str(tmp_path / "fixed"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "read the data: 1/4 (25%)" in err and "write the report: 4/4 (100%)" in err
