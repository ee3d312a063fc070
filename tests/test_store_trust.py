"""Trusting a results folder: the grid is validated before any work, one run at a time holds --out, files that are
not records are set aside, the report reads only the stored config's cells, temporary files are unique and their
orphans swept, and files are readable as the umask allows."""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from grid_helpers import child_env, small_grid, write_grid
from corrective_unlearning.cli import main
from corrective_unlearning.config import ConfigError
from corrective_unlearning.records import write_json_atomic, write_safetensors_atomic
from corrective_unlearning.report.build import build_report
from corrective_unlearning.runner import expand_cells, format_status, grid_status, load_grid_config, run_grid

GRID = small_grid({"cf": {"grid": {"last_k": ["all"]}, "params": {"steps": 2}},
                   "ssd": {"grid": {"alpha": [1, 10], "lambda_ratio": [1]}}}, rates=[1.0])


def _config(tmp_path, **changes) -> Path:
    return write_grid(tmp_path, GRID, **changes)


_env = child_env


def _cli_error(capsys, *argv) -> str:
    """Run the CLI in this process; it must fail with exit code 2 and one line on stderr, no traceback."""
    capsys.readouterr()
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# -- 1. the grid is validated before any work --------------------------------------------------------------------

@pytest.mark.parametrize("seeds, message", [
    (["0", 1], r"seeds\[0\] = '0' \(str\)"),
    ([0, 1.0], r"seeds\[1\] = 1.0 \(float\)"),
    ([-1], r"seeds\[0\] = -1"),
    ([True], r"seeds\[0\] = True \(bool\)"),
    ([0, 2, 0], "seeds: 0 is listed twice"),
    ([], "seeds: expected a non-empty list"),
])
def test_seeds_must_be_distinct_non_negative_integers(tmp_path, capsys, seeds, message):
    with pytest.raises(ConfigError, match=message):
        load_grid_config(str(_config(tmp_path, seeds=seeds)), [])
    err = _cli_error(capsys, "run", str(_config(tmp_path, seeds=seeds)), "--out", str(tmp_path / "out"))
    assert "seeds" in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("changes, message", [
    ({"rates": [0.5, 1.0, 0.5]}, "rates: 0.5 and 0.5 are one rate, listed twice"),
    ({"rates": [1, 1.0]}, "rates: 1 and 1.0 are one rate, listed twice"),
    ({"rates": [0.121, 0.12]}, r"rates: 0.121 and 0.12 are one rate in cell ids \(rate0.12\)"),
    ({"manipulations": [{"name": "poison", "sizes": [40, 20, 40]}]}, r"manipulations\[0\].sizes: 40 is listed twice"),
    ({"manipulations": [{"name": "poison", "sizes": [40]}, {"name": "poison", "sizes": [40]}]},
     "the grid has cell poison-n40-seed0-rate0.00-original-.* twice"),
])
def test_a_rate_size_or_manipulation_listed_twice_is_refused(tmp_path, capsys, changes, message):
    with pytest.raises(ConfigError, match=message):
        load_grid_config(str(_config(tmp_path, **changes)), [])
    _cli_error(capsys, "run", str(_config(tmp_path, **changes)), "--out", str(tmp_path / "out"))


def test_an_unknown_model_is_refused_at_load_naming_the_known_ones(tmp_path, capsys):
    with pytest.raises(ConfigError, match="model: unknown model 'resnet99'; known models: .*resnet9, .*small_cnn"):
        load_grid_config(str(_config(tmp_path)), ["model=resnet99"])
    err = _cli_error(capsys, "run", str(_config(tmp_path)), "model=resnet99", "--out", str(tmp_path / "out"))
    assert "wrn28x10" in err


@pytest.mark.parametrize("manipulation, message", [
    # synthetic: 384 training samples, 16 held out for validation -> 368 candidates; 92 of each of its 4 classes
    ({"name": "poison", "sizes": [40, 400]}, r"manipulations\[0\] \(poison\) size 400: n exceeds the 368 samples"),
    ({"name": "random_labels", "sizes": [369]}, "size 369: n exceeds the 368 samples it can be drawn from"),
    ({"name": "interclass", "sizes": [186]}, r"size 186: interclass class 0: n must be in \[0, 92\]"),
])
def test_an_oversize_manipulation_is_refused_before_any_work(tmp_path, capsys, manipulation, message):
    config = load_grid_config(str(_config(tmp_path, manipulations=[manipulation])), [])
    started = time.time()
    with pytest.raises(ConfigError, match=message):
        run_grid(config, tmp_path / "out", progress=False)
    assert time.time() - started < 20 and not (tmp_path / "out" / "records").exists()
    assert not (tmp_path / "out" / "config.yaml").exists()
    err = _cli_error(capsys, "run", str(_config(tmp_path, manipulations=[manipulation])), "--out",
                     str(tmp_path / "out"))
    assert "n exceeds" in err or "n must be in" in err


def test_an_unwritable_cache_folder_is_refused(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("CORRECTIVE_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(ConfigError, match=r"the cache folder .*a-file/cache \(\$CORRECTIVE_CACHE_DIR\) is not "
                                          r"writable \(Not a directory\)"):
        run_grid(load_grid_config(str(_config(tmp_path)), []), tmp_path / "out", progress=False)
    err = _cli_error(capsys, "run", str(_config(tmp_path)), "--out", str(tmp_path / "out"))
    assert "CORRECTIVE_CACHE_DIR" in err and not (tmp_path / "out" / "records").exists()


def test_an_out_path_that_is_a_file_or_unwritable_is_refused(tmp_path, capsys, monkeypatch):
    config = _config(tmp_path)
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder")
    assert "is a file; expected a folder" in _cli_error(capsys, "run", str(config), "--out", str(blocker))
    err = _cli_error(capsys, "run", str(config), "--out", str(blocker / "sub"))
    assert f"cannot be made: {blocker} is a file" in err
    real_access = os.access
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != locked and real_access(path, mode))
    assert f"--out {locked} is not writable" in _cli_error(capsys, "run", str(config), "--out", str(locked))
    assert f"({locked}, where it would be made)" in _cli_error(capsys, "run", str(config), "--out",
                                                               str(locked / "new"))
    assert blocker.read_text() == "not a folder" and not list(locked.iterdir())


# -- 2. the store ------------------------------------------------------------------------------------------------

def test_a_second_run_on_the_same_out_is_refused_naming_the_first(tmp_path, capsys):
    config = _config(tmp_path, rates=[0.1 * i for i in range(1, 11)], seeds=[0, 1])
    out = tmp_path / "out"
    command = [sys.executable, "-m", "corrective_unlearning", "run", str(config), "--out", str(out), "--quiet"]
    first = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and f'"pid": {first.pid}' not in _text(out / "run.lock"):
            time.sleep(0.05)
        assert first.poll() is None, "the first run should still be running"
        err = _cli_error(capsys, "run", str(config), "--out", str(out))
        assert f"is in use by another 'corrective run' (pid {first.pid} on host {socket.gethostname()}" in err
        assert "use another --out" in err
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    from corrective_unlearning.runner.outdir import out_lock

    with out_lock(out):  # the kill released it
        assert json.loads((out / "run.lock").read_text())["pid"] == os.getpid()


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def test_files_that_are_not_records_are_set_aside_and_their_cells_rerun(tmp_path, capsys):
    config = load_grid_config(str(_config(tmp_path)), [])
    out = tmp_path / "out"
    assert len(run_grid(config, out, progress=False)) == 4
    cells = {c.method + str(c.hparams.get("alpha", "")): c for c in expand_cells(config)}
    broken = {cells["cf"].id: "[]", cells["ssd1"].id: "null", cells["ssd10"].id: '{"status": "ok"}'}
    for cell, text in broken.items():
        (out / "records" / f"{cell}.json").write_text(text)
    capsys.readouterr()

    status = grid_status(out)  # was: AttributeError: 'list' object has no attribute 'get'
    assert {m: (row["done"], row["left"]) for m, row in status["methods"].items()} == {
        "original": (1, 0), "cf": (0, 1), "ssd": (0, 2)}
    assert "warning: 3 file(s) in records/ are not valid records" in format_status(status)
    assert main(["status", str(out)]) == 0

    paths = build_report(out)
    assert "warning: 3 file(s) in" in capsys.readouterr().err
    assert len(paths["cells.csv"].read_text().strip().splitlines()) == 1 + 1  # header + the original

    rerun = run_grid(config, out, progress=True)
    err = capsys.readouterr().err
    assert sorted(r["cell"] for r in rerun) == sorted(broken) and all(r["status"] == "ok" for r in rerun)
    for cell in broken:
        assert f"{cell}.json is not a valid record" in err and f"moved to records/invalid/{cell}.json" in err
    assert "expected a JSON object, got list" in err and "got null" in err and "missing field(s) cell" in err
    assert sorted(p.name for p in (out / "records" / "invalid").iterdir()) == sorted(f"{c}.json" for c in broken)
    # off a terminal the grid's progress is plain lines, no carriage returns
    assert "grid (local): 3/3 (100%)" in err and "\r" not in err
    assert grid_status(out)["invalid"] == [] and main(["status", str(out)]) == 0


def test_report_reads_only_the_cells_of_the_stored_config(tmp_path, capsys):
    out = tmp_path / "out"
    methods = {"cf": {"grid": {"last_k": ["all"]}, "params": {"steps": 2}}}
    run_grid(load_grid_config(str(_config(tmp_path, methods=methods, rates=[0.5, 1.0])), []), out, progress=False)
    methods["cf"]["params"]["steps"] = 3  # other hyperparameters: other cells; the first run's records stay
    config = load_grid_config(str(_config(tmp_path, methods=methods, rates=[0.5, 1.0])), [])
    assert len(run_grid(config, out, progress=False)) == 2
    assert len(list((out / "records").glob("*.json"))) == 5
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    err = capsys.readouterr().err
    assert "note: 2 record(s) in" in err and "does not have (an earlier grid" in err and "were ignored" in err
    rows = (out / "report" / "cells.csv").read_text().strip().splitlines()[1:]
    assert len(rows) == 3 and sum(",cf," in row for row in rows) == 2
    assert {c.id for c in expand_cells(config)} == {row.split(",")[0] for row in rows}


# -- 3. temporary files: unique, and orphans swept -----------------------------------------------------------------

def test_safetensors_temporary_files_are_unique_and_never_left(tmp_path, monkeypatch):
    import safetensors.torch

    real, used = safetensors.torch.save_file, []

    def recording(tensors, filename, metadata=None):
        used.append(Path(filename))
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", recording)
    target = tmp_path / "m.safetensors"
    for _ in range(2):
        write_safetensors_atomic(target, {"w": torch.zeros(3)})
    assert len(set(used)) == 2 and all(p.parent == tmp_path and p.name.startswith(".m.safetensors.")
                                       and p.suffix == ".tmp" for p in used)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]

    def failing(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", failing)
    with pytest.raises(OSError, match="disk full"):
        write_safetensors_atomic(target, {"w": torch.ones(3)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_a_resumed_run_sweeps_orphan_temporary_files_of_dead_writers(tmp_path):
    from corrective_unlearning.records import temporary_prefix

    config = load_grid_config(str(_config(tmp_path)), [])
    out = tmp_path / "out"
    run_grid(config, out, progress=False)
    record = next((out / "records").glob("*.json"))
    # a writer killed inside write_json_atomic (as a SIGKILL of a grid can land): its temporary file stays
    script = ("import json, os, sys; from corrective_unlearning.records import write_json_atomic\n"
              "json.dump = lambda *a, **k: os._exit(9)\n"
              "write_json_atomic(sys.argv[1], {'half': True})\n")
    killed = subprocess.run([sys.executable, "-c", script, str(record)], env=_env())
    assert killed.returncode == 9
    (orphan,) = (out / "records").glob(".*.tmp")
    assert orphan.name.startswith(f".{record.name}.")
    live = out / "records" / f"{temporary_prefix(record)}abc.tmp"  # a live writer's (this process)
    live.write_text("")
    os.utime(live, (time.time() + 3600, time.time() + 3600))
    legacy = out / "records" / f".{record.name}.k2j3h4.tmp"  # an older name: swept once older than the run
    legacy.write_text("")
    assert run_grid(config, out, progress=False) == []
    assert sorted(p.name for p in (out / "records").glob(".*.tmp")) == [live.name]
    assert json.loads(record.read_text())["status"] == "ok"


# -- 4. file modes -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_written_files_are_readable_as_the_umask_allows(tmp_path, umask, mode):
    script = ("import os, sys, torch; os.umask(int(sys.argv[2], 8))\n"
              "from corrective_unlearning.records import write_json_atomic, write_safetensors_atomic\n"
              "write_json_atomic(sys.argv[1] + '/r.json', {'a': 1})\n"
              "write_safetensors_atomic(sys.argv[1] + '/m.safetensors', {'w': torch.zeros(2)})\n"
              "assert os.umask(0) == int(sys.argv[2], 8), 'the umask changed'\n")
    subprocess.run([sys.executable, "-c", script, str(tmp_path), oct(umask)], env=_env(), check=True)
    for name in ("r.json", "m.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_this_process_writes_records_as_its_umask_allows(tmp_path):
    write_json_atomic(tmp_path / "probe.json", {})
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "probe.json").stat().st_mode) == 0o666 & ~umask
