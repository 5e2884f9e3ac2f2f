"""Engines: where the per-recording tasks run. `local` (this process, one after another) or `dask`.

Both call the same `tasks.run_one` (timed) once per recording and hand each result to
`on_result` as it comes back, in completion order. Dask: a task per recording
on a `dask.distributed` cluster — a `LocalCluster` of `workers` processes (one
thread each: a task is CPU-bound and the pipeline runs its own handpiece
thread) started here, or the scheduler at `address`. A task whose worker died
is retried by Dask on another worker (its `allowed-failures`, 3 by default) and
then comes back as failed, with the reason; the other recordings go on.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

from guidance.errors import UserError
from guidance.fleet.sources import RecordingRef
from guidance.fleet.tasks import Job, failed, probe, timed_run_one

# on_result(ref, result, cpu_s, wall_s): a recording's result and what its task cost where it ran
OnResult = Callable[[RecordingRef, dict, float, float], None]


class LocalEngine:
    """One process, one recording after another: the single-process fleet (and the reference for the others)."""

    name = "local"

    def __init__(self) -> None:
        self.workers = 1

    def check(self, paths: list[str]) -> None:
        pass

    def run(self, job: Job, refs: list[RecordingRef], out_dir: str, on_result: OnResult) -> None:
        for ref in refs:
            on_result(ref, *timed_run_one(job, ref, out_dir))

    def close(self) -> None:
        pass


class DaskEngine:
    """A dask.distributed cluster: one task per recording, results as they complete."""

    name = "dask"

    def __init__(self, address: str | None = None, workers: int | None = None):
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise UserError("the dask engine needs dask.distributed: pip install 'guidance[fleet]'",
                            field="--engine") from None
        self.cluster: Any = None
        if address is None:
            import dask

            n = workers or os.cpu_count() or 1
            # dashboard on a free port (never a clash with another cluster on the machine); no statistical
            # profiler in the workers (it samples the task's thread every 10 ms: measured slower here)
            with dask.config.set({"distributed.worker.profile.enabled": False}):
                self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                            silence_logs=logging.ERROR)
            self.client = Client(self.cluster)
        else:
            try:
                self.client = Client(address, timeout="20s")
            except (OSError, TimeoutError, ValueError) as exc:
                raise UserError(f"cannot reach the Dask scheduler ({type(exc).__name__}: {exc})", field="--address") from None
        self.workers = len(self.client.scheduler_info(n_workers=-1)["workers"])
        if not self.workers:
            self.close()
            raise UserError("the Dask cluster has no worker", field="--address")

    def check(self, paths: list[str]) -> None:
        """Every worker runs this guidance version and sees the output folder (and the plan) at the same path."""
        from guidance import __version__

        seen = self.client.run(probe, paths)
        for worker, p in sorted(seen.items()):
            if p["guidance"] != __version__:
                raise UserError(f"worker {worker} runs guidance {p['guidance']}, this is {__version__}", field="--address")
            if p["missing"]:
                raise UserError(f"worker {worker} cannot see {p['missing'][0]} (workers need the same path: "
                                "a shared file system)", field="--address")

    def run(self, job: Job, refs: list[RecordingRef], out_dir: str, on_result: OnResult) -> None:
        from dask.distributed import as_completed

        futures = {self.client.submit(timed_run_one, job, ref, out_dir, key=f"guidance-fleet-{job.command}-{ref.key}",
                                      pure=False): ref for ref in refs}
        try:
            for fut in as_completed(futures):
                ref = futures[fut]
                try:
                    res, cpu_s, wall_s = fut.result()
                except Exception as exc:  # the task never returned (KilledWorker, lost cluster): this recording's failure
                    res, cpu_s, wall_s = failed(ref, job, f"{type(exc).__name__}: {exc}".splitlines()[0]), 0.0, 0.0
                on_result(ref, res, cpu_s, wall_s)
                fut.release()
        finally:
            self.client.cancel(list(futures))

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()


def make_engine(name: str, *, address: str | None = None, workers: int | None = None) -> Any:
    if name == "local":
        if address:
            raise UserError("only with --engine dask", field="--address")
        if workers not in (None, 1):
            raise UserError("the local engine is one process; use --engine dask for more", field="--workers")
        return LocalEngine()
    if name == "dask":
        if address and workers:
            raise UserError("the cluster at --address has its own workers", field="--workers")
        if workers is not None and workers < 1:
            raise UserError("must be at least 1", field="--workers")
        return DaskEngine(address, workers)
    raise UserError(f"unknown engine {name!r} (local, dask)", field="--engine")
