"""Ray: one long-lived actor per GPU, or per CPU slot on a CPU machine. ``ray.init()`` starts a local instance
when no cluster is given and attaches to the cluster named by ``RAY_ADDRESS``. Every actor writes its records to
``--out`` and reads/writes original models in ``$CORRECTIVE_CACHE_DIR``: on a cluster both must be paths every
node sees (a shared filesystem), and the package must be installed on every node."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ..cells import Worker
from ..spec import Cell, GridConfig
from . import Attempts


def _ray():
    try:
        import ray  # lazy: Ray is an optional extra ([ray])
    except ImportError:
        raise RuntimeError("the ray executor needs Ray: pip install corrective-unlearning[ray]") from None
    return ray


class _Actor:
    """A :class:`Worker` inside a Ray actor (the environment it needs is set before the worker is built)."""

    def __init__(self, config: GridConfig, out: str, name: str, env: dict) -> None:
        os.environ.update(env)
        import torch  # lazy: runs in the Ray actor's process, after its environment (threads) is set

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        self.error = ""
        try:
            self.worker = Worker(config, out, name, "cuda" if torch.cuda.is_available() and config.device != "cpu"
                                 else None)
        except Exception as error:  # a setup error (data not found, ...): the run stops with it, no retries
            self.error = f"{type(error).__name__}: {error}"

    def ready(self) -> str:
        """"" when the worker is up, else why it could not start."""
        return self.error

    def run_unit(self, cells: list[Cell]) -> list[dict]:
        return self.worker.run_unit(cells)


class RayExecutor:
    def __init__(self, config: GridConfig, out: str | Path, workers: int | None = None, retries: int = 2) -> None:
        self.ray = _ray()
        self.config, self.out, self.workers, self.retries = config, Path(out).resolve(), workers, retries

    def _init(self) -> bool:
        """Start (or attach to) Ray; True when this call started it (and must shut it down)."""
        if self.ray.is_initialized():
            return False
        self.ray.init(include_dashboard=False, log_to_driver=False,
                      **({} if os.environ.get("RAY_ADDRESS") else {"num_cpus": self.workers}))
        return True

    def run(self, units: list[list[Cell]], on_record: Callable[[dict], None]) -> None:
        started = self._init()
        try:
            self._run(units, on_record)
        finally:
            if started:
                self.ray.shutdown()

    def _slots(self) -> tuple[int, dict]:
        """How many actors, and what each one reserves: a GPU each when the cluster has GPUs (and the config does
        not ask for the CPU), else a CPU each."""
        resources = self.ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if self.config.device != "cpu" else 0
        count = self.workers or max(gpus or int(resources.get("CPU", 1)), 1)
        return count, ({"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1})

    def _run(self, units: list[list[Cell]], on_record: Callable[[dict], None]) -> None:
        ray = self.ray
        count, reserve = self._slots()
        actor_class = ray.remote(max_restarts=0, max_task_retries=0, **reserve)(_Actor)
        # what the workers need to find the same data and cache as this process
        env = {k: v for k, v in os.environ.items() if k.startswith("CORRECTIVE_")}
        env.setdefault("OMP_NUM_THREADS", "1")
        spawned = 0

        def new_actors(how_many: int) -> list:
            nonlocal spawned
            actors = [actor_class.remote(self.config, str(self.out), f"ray-{spawned + i}", env)
                      for i in range(how_many)]
            spawned += how_many
            errors = [e for e in ray.get([a.ready.remote() for a in actors]) if e]
            if errors:
                raise RuntimeError(f"a Ray worker could not start: {errors[0]}")
            return actors

        attempts, queue = Attempts(self.out, self.retries, on_record), list(units)
        idle = new_actors(min(count, len(queue)))
        running: dict = {}  # object ref -> (actor, unit)
        while queue or running:
            while queue and idle:
                actor, unit = idle.pop(), queue.pop(0)
                running[actor.run_unit.remote(unit)] = (actor, unit)
            (ref,), _ = ray.wait(list(running), num_returns=1)
            actor, unit = running.pop(ref)
            try:
                records = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as error:
                left = attempts.lost(unit, _brief(error))
                if left:
                    queue.insert(0, left)
                if queue:
                    idle += new_actors(1)  # the dead actor's replacement
                continue
            for record in records:
                attempts.record(record)
            idle.append(actor)
        for actor in idle:
            ray.kill(actor)


def _brief(error: Exception) -> str:
    """An actor's death in one line or two: Ray's summary, and the last line of the cause's traceback (e.g. the
    exception that killed the actor's constructor) when there is one."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()] or [""]
    return f"{type(error).__name__}: " + (lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}")
