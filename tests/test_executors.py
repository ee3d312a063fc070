"""Executors (local in-process, local worker processes, a real local Ray instance), worker loss and retries, a
killed grid resumed, and ``corrective status``."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grid_helpers import child_env, small_grid, write_grid
from corrective_unlearning.cli import main
from corrective_unlearning.runner import expand_cells, grid_status, load_grid_config, load_records, run_grid
from corrective_unlearning.runner.executors import create_executor

GRID = small_grid({"cf": {"grid": {"last_k": ["all"]}, "params": {"steps": 5}},
                   "ssd": {"grid": {"alpha": [1, 10], "lambda_ratio": [1]}}}, rates=[0.5, 1.0], seeds=[0, 1])
CELLS = 2 * (1 + 2 * 3)  # seeds x (original + rates x settings)


def _config(tmp_path, **changes) -> Path:
    return write_grid(tmp_path, GRID, **changes)


_env = child_env


def _metrics(out: Path) -> dict:
    """Each cell's metrics as stored (JSON: a NaN of an empty view reads as null)."""
    return {r["cell"]: r["metrics"] for r in load_records(out)}


def _assert_one_ok_record_per_cell(out: Path, config_path: Path) -> None:
    files = sorted((out / "records").glob("*.json"))
    assert {f.stem for f in files} == {c.id for c in expand_cells(load_grid_config(str(config_path), []))}
    assert all(json.loads(f.read_text())["status"] == "ok" for f in files)
    assert not list((out / "records").glob(".*.tmp"))


def _assert_identical(a: dict, b: dict) -> None:
    """Same command, same bits: every cell's metrics equal exactly, whichever executor ran it (one thread each)."""
    assert a.keys() == b.keys()
    for cell in a:
        assert b[cell] == a[cell], cell


def test_unknown_executor_and_bad_counts_are_named(tmp_path):
    config = load_grid_config(str(_config(tmp_path)), [])
    with pytest.raises(ValueError, match=r"unknown executor 'slurm'; expected one of \['local', 'ray'\]"):
        create_executor("slurm", config, tmp_path / "out")
    with pytest.raises(ValueError, match="retries: expected an integer >= 0"):
        create_executor("local", config, tmp_path / "out", retries=-1)


def test_ray_missing_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    config = load_grid_config(str(_config(tmp_path)), [])
    with pytest.raises(RuntimeError, match=r"pip install corrective-unlearning\[ray\]"):
        run_grid(config, tmp_path / "out", progress=False, executor="ray")
    assert not (tmp_path / "out" / "records").exists()


def test_local_worker_processes_equal_in_process_and_a_crash_is_retried(tmp_path):
    config = load_grid_config(str(_config(tmp_path)), [])
    serial = run_grid(config, tmp_path / "serial", progress=False)
    assert len(serial) == CELLS and all(r["status"] == "ok" for r in serial)
    # Two worker processes; the first cf cell kills its worker once: its unit's unfinished cells are resubmitted.
    marker = tmp_path / "crashed"
    os.environ.update(CORRECTIVE_CRASH_METHOD="cf", CORRECTIVE_CRASH_ONCE=str(marker))
    try:
        parallel = run_grid(config, tmp_path / "parallel", progress=False, workers=2)
    finally:
        for key in ("CORRECTIVE_CRASH_METHOD", "CORRECTIVE_CRASH_ONCE"):
            os.environ.pop(key)
    assert marker.exists(), "the crash should have happened"
    assert len(parallel) == CELLS and all(r["status"] == "ok" for r in parallel)
    _assert_identical(_metrics(tmp_path / "serial"), _metrics(tmp_path / "parallel"))
    _assert_one_ok_record_per_cell(tmp_path / "parallel", _config(tmp_path))


def test_a_worker_that_keeps_dying_fails_its_cells_after_the_retries(tmp_path):
    config = load_grid_config(str(_config(tmp_path, seeds=[0], rates=[1.0])), [])
    os.environ["CORRECTIVE_CRASH_METHOD"] = "cf"
    try:
        records = run_grid(config, tmp_path / "out", progress=False, workers=2, retries=1)
    finally:
        os.environ.pop("CORRECTIVE_CRASH_METHOD")
    by_method = {}
    for record in load_records(tmp_path / "out"):
        by_method.setdefault(record["method"], []).append(record)
    assert [r["status"] for r in by_method["original"]] == ["ok"]
    # cf runs first in its unit: cf and the ssd cells after it never ran; each gets one failed record
    failed = by_method["cf"] + by_method["ssd"]
    assert len(failed) == 3 and all(r["status"] == "failed" and r["attempts"] == 2 for r in failed)
    assert "worker died 2 time(s)" in failed[0]["error"]
    assert len(records) == 4 and len(list((tmp_path / "out" / "records").glob("*.json"))) == 4


def test_status_of_a_half_finished_grid(tmp_path, capsys):
    config_path = _config(tmp_path)
    out = tmp_path / "out"
    run_grid(load_grid_config(str(config_path), []), out, progress=False)
    records = out / "records"
    cells = expand_cells(load_grid_config(str(config_path), []))
    ssd = [c for c in cells if c.method == "ssd"]
    cf = [c for c in cells if c.method == "cf"]
    # half finished: 3 ssd cells and 1 cf cell never ran, 1 cf cell failed, 2 ssd cells are running now
    for cell in ssd[:5] + cf[:1]:
        (records / f"{cell.id}.json").unlink()
    failed = json.loads((records / f"{cf[1].id}.json").read_text()) | {"status": "failed", "error": "Boom: bad"}
    (records / f"{cf[1].id}.json").write_text(json.dumps(failed))
    progress = out / "progress"
    progress.mkdir()
    import socket

    (progress / "run.json").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                   "executor": "local", "started": time.time() - 5}))
    (progress / "local-0.json").write_text(json.dumps({"worker": "local-0", "unit": [c.id for c in ssd[:2]],
                                                       "running": ssd[0].id}))
    status = grid_status(out)
    counts = {m: [row[k] for k in ("done", "failed", "running", "left")] for m, row in status["methods"].items()}
    assert counts == {"original": [2, 0, 0, 0], "cf": [2, 1, 0, 1], "ssd": [3, 0, 2, 3]}
    assert status["live"] and status["workers"] == 1
    per_cell = {m: row["seconds_per_cell"] for m, row in status["methods"].items()}
    assert status["eta_seconds"] == pytest.approx(per_cell["cf"] * 1 + per_cell["ssd"] * 5)
    assert status["errors"] == [(cf[1].id, "Boom: bad")]

    assert main(["status", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "running (local, 1 worker(s) busy)" in printed and "failed " + cf[1].id + ": Boom: bad" in printed
    assert any(line.split() == ["ssd", "3", "0", "2", "3", line.split()[-1]] for line in printed.splitlines())
    # the driver is gone (a killed run): nothing is running, those cells are left
    (progress / "run.json").write_text(json.dumps({"pid": 2 ** 22 + 7, "host": socket.gethostname(),
                                                   "started": 0}))
    assert grid_status(out)["methods"]["ssd"]["left"] == 5
    assert main(["status", str(tmp_path / "nothing")]) == 2


def _kill_midway(command: list[str], out: Path, env: dict, at_least: int) -> int:
    """Start ``command`` in its own process group, SIGKILL the group once ``at_least`` records exist."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list((out / "records").glob("*.json"))) < at_least:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    # Ray's own processes are not in the group: they notice the driver's death within a few seconds, and an actor
    # may finish the cell it was running meanwhile. Count once the store has been still for 3 s.
    count, still = -1, 0
    while still < 3:
        time.sleep(1)
        now = len(list((out / "records").glob("*.json")))
        count, still = now, (still + 1 if now == count else 0)
    return count


@pytest.mark.parametrize("executor, workers", [("local", 1), ("local", 2), ("ray", 2)])
def test_killed_grid_resumes_with_exactly_one_record_per_cell(tmp_path, executor, workers):
    if executor == "ray":
        pytest.importorskip("ray")
    config_path = _config(tmp_path, rates=[0.25, 0.5, 0.75, 1.0])
    out = tmp_path / "out"
    command = [sys.executable, "-m", "corrective_unlearning", "run", str(config_path), "--out", str(out), "--quiet",
               "--executor", executor, "--workers", str(workers)]
    env = _env(**({"RAY_ADDRESS": ""} if executor == "ray" else {}))
    total = len(expand_cells(load_grid_config(str(config_path), [])))
    done_before = _kill_midway(command, out, env, 3)
    assert 3 <= done_before < total, "the kill should land midway"
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{done_before} already done, {total - done_before} to run" in result.stdout
    _assert_one_ok_record_per_cell(out, config_path)
    assert not (out / "progress").exists()


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": _env()["PYTHONPATH"], "OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


def test_ray_records_equal_the_local_executors(tmp_path, ray_instance):
    config = load_grid_config(str(_config(tmp_path)), [])
    assert len(run_grid(config, tmp_path / "local", progress=False)) == CELLS
    on_ray = run_grid(config, tmp_path / "ray", progress=False, executor="ray")
    assert ray_instance.is_initialized()  # an instance it did not start is left running
    assert len(on_ray) == CELLS and all(r["status"] == "ok" for r in on_ray)
    _assert_identical(_metrics(tmp_path / "local"), _metrics(tmp_path / "ray"))
    _assert_one_ok_record_per_cell(tmp_path / "ray", _config(tmp_path))
    assert {r["environment"]["device"] for r in on_ray} == {"cpu"}
    assert run_grid(config, tmp_path / "ray", progress=False, executor="ray") == []


def test_a_dead_ray_actor_is_replaced_and_its_cells_retried(tmp_path, ray_instance):
    config = load_grid_config(str(_config(tmp_path, seeds=[0])), [])
    os.environ.update(CORRECTIVE_CRASH_METHOD="ssd", CORRECTIVE_CRASH_ONCE=str(tmp_path / "crashed"))
    try:
        records = run_grid(config, tmp_path / "out", progress=False, executor="ray")
    finally:
        for key in ("CORRECTIVE_CRASH_METHOD", "CORRECTIVE_CRASH_ONCE"):
            os.environ.pop(key)
    assert (tmp_path / "crashed").exists()
    assert len(records) == 7 and all(r["status"] == "ok" for r in records)
    _assert_one_ok_record_per_cell(tmp_path / "out", _config(tmp_path, seeds=[0]))


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_worker_that_cannot_start_stops_the_run_with_the_reason(tmp_path, executor, request):
    if executor == "ray":
        request.getfixturevalue("ray_instance")
    # CIFAR-100: nowhere on the search path, even where $CORRECTIVE_DATA_DIR holds CIFAR-10 (as in CI, and as Ray's
    # workers inherit it from the session's environment)
    config = load_grid_config(str(_config(tmp_path, dataset={"name": "cifar100", "data_dir": str(tmp_path / "none")},
                                          seeds=[0])), [])
    with pytest.raises(RuntimeError, match="could not start|failed outside a cell") as caught:
        run_grid(config, tmp_path / "out", progress=False, executor=executor, workers=2)
    assert "DataNotFoundError" in str(caught.value) and "cifar-100-python" in str(caught.value)
    assert not list((tmp_path / "out" / "records").glob("*.json"))
