"""A fleet run: find the recordings, skip those already done, run the rest on an engine, write the cohort.

The output folder (docs/fleet.md):

    OUT/fleet.json          the command and its options (a rerun must ask for the same)
    OUT/results/KEY.json    one per recording, written atomically when it came back: ok or failed (with why)
    OUT/recordings/KEY/     reprocess, retrack: the new recording with its comparison.json
    OUT/cohort.html         the cohort report over the results (guidance/fleet/cohort.py)
    OUT/cohort.csv          one row per recording, for analysts
    OUT/cohort_zones.csv    one row per recording and planned zone
    OUT/runs.jsonl          one line per run: engine, workers, recordings done, seconds

A rerun (after an interruption, or a failure worth retrying) skips every
recording whose result says ok, redoes the others, and rewrites the cohort.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from guidance import __version__
from guidance.errors import UserError
from guidance.fleet.engine import make_engine
from guidance.fleet.sources import RecordingRef, find_recordings
from guidance.fleet.tasks import COMMANDS, RECORDINGS, RESULTS, Job
from guidance.review.report import Progress
from guidance.session.writer import write_json_atomic

FLEET = "fleet.json"
FORMAT = "guidance-fleet"


@dataclass
class FleetRun:
    out: Path
    job: Job
    engine: str
    workers: int
    recordings: list[RecordingRef]
    skipped: int  # already done by an earlier run
    ran: int
    results: list[dict] = field(default_factory=list)  # one per recording, in `recordings` order
    elapsed_s: float = 0.0
    task_cpu_s: float = 0.0  # CPU seconds the tasks of this run took, summed (each in its worker process)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.results if r["status"] != "ok"]

    def lines(self) -> list[str]:
        rate = (f" ({self.ran / self.elapsed_s:.2f} recordings/s, {self.task_cpu_s / self.ran:.2f} CPU s each)"
                if self.ran and self.elapsed_s > 0 else "")
        out = [f"fleet {self.job.command}: {len(self.recordings)} recording(s): {self.skipped} already done, "
               f"{self.ran} run in {self.elapsed_s:.1f} s on {self.engine} ({self.workers} worker(s)){rate}, "
               f"{len(self.failed)} failed"]
        for r in self.failed:
            out.append(f"  failed: {r['recording']}: {r['reason']}")
        out.append(f"cohort report: {self.out / 'cohort.html'}; tables: {self.out / 'cohort.csv'}, "
                   f"{self.out / 'cohort_zones.csv'}")
        return out


def check_job(job: Job) -> Job:
    """Everything about the options a user can get wrong, checked once on the client before any task."""
    if job.command not in COMMANDS:
        raise UserError(f"unknown fleet command {job.command!r}")
    if job.command == "reprocess":
        if job.plan is not None:
            from guidance.zones.plan import load_plan

            load_plan(job.plan)
            job = Job(**{**job.__dict__, "plan": str(Path(job.plan).resolve())})
        if job.margin_mm is not None and not (math.isfinite(job.margin_mm) and 0 <= job.margin_mm < 1000):
            raise UserError("must be a number of millimetres from 0 to 1000", field="--margin")
    elif job.plan is not None or job.margin_mm is not None:
        raise UserError("only for fleet reprocess", field="--plan" if job.plan is not None else "--margin")
    if job.command == "retrack":
        from guidance.fleet.retrack import check_landmark_model, merged_config

        check_landmark_model(job.landmark_model)
        merged_config({}, job.config_overrides)
    elif job.landmark_model is not None or job.config_overrides:
        raise UserError("only for fleet retrack", field="--landmark-model" if job.landmark_model else "--config")
    return job


def _prepare(out: Path, job: Job) -> None:
    if out.exists() and not out.is_dir():
        raise UserError("is a file; give a folder for the results", path=out)
    if not out.parent.is_dir():
        raise UserError("the folder to write into does not exist (create it first)", path=out.parent)
    marker = out / FLEET
    want = {"format": FORMAT, "command": job.command, "options": job.options()}
    if marker.exists():
        try:
            have = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise UserError("unreadable", path=marker) from None
        if {k: have.get(k) for k in want} != want:
            raise UserError(f"holds a fleet run of another command or options ({have.get('command')} "
                            f"{json.dumps(have.get('options'))}); choose another output folder", path=out)
    elif out.exists() and any(out.iterdir()):
        raise UserError("exists, is not empty and is not a fleet output folder", path=out)
    (out / RESULTS).mkdir(parents=True, exist_ok=True)
    if job.command != "report":
        (out / RECORDINGS).mkdir(exist_ok=True)
    if not marker.exists():
        write_json_atomic(marker, {**want, "guidance": __version__})


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        return None


def result_path(out: Path, key: str) -> Path:
    return out / RESULTS / f"{key}.json"


def read_result(out: Path, key: str) -> dict | None:
    p = result_path(out, key)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_fleet(job: Job, roots: list[str], out_dir: str | Path, *, engine: str = "local", address: str | None = None,
              workers: int | None = None, progress: bool = True, stream: Any = None) -> FleetRun:
    """Run `job` on every recording under `roots` into `out_dir`; resumable; writes the cohort report."""
    job = check_job(job)
    out = Path(out_dir).resolve()
    refs = find_recordings(roots, exclude=out)
    _prepare(out, job)
    with _only_run(out):
        return _run(job, refs, out, engine, address, workers, progress, stream)


@contextlib.contextmanager
def _only_run(out: Path) -> Iterator[None]:
    """One run at a time in an output folder (two would do the same recordings twice): a lock on OUT/.lock."""
    fh = open(out / ".lock", "a")
    try:
        try:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - not POSIX: no lock
            pass
        except OSError:
            raise UserError("another fleet run is writing into this folder", path=out) from None
        yield
    finally:
        fh.close()


def _run(job: Job, refs: list[RecordingRef], out: Path, engine: str, address: str | None, workers: int | None,
         progress: bool, stream: Any) -> FleetRun:
    from guidance.fleet.cohort import write_cohort

    for torn in (out / RESULTS).glob("*.part"):  # a result being written when the last run was killed
        torn.unlink()
    todo = []
    for ref in refs:
        r = read_result(out, ref.key)
        if r is not None and r.get("status") == "ok":
            continue
        todo.append(ref)
        if job.command != "report":  # a half-written recording of an interrupted run is redone from scratch
            # ... and so is the hidden temporary folder its writer had open (`.KEY.part.part-XXXX`) when killed
            torn_dirs = list((out / RECORDINGS).glob(f".{glob.escape(ref.key)}.part*-*"))
            for d in (out / RECORDINGS / ref.key, out / RECORDINGS / f"{ref.key}.part", *torn_dirs):
                if d.exists():
                    shutil.rmtree(d)
    run = FleetRun(out, job, engine, 1, refs, skipped=len(refs) - len(todo), ran=0)
    prog = Progress(len(refs), enabled=progress, stream=stream or sys.stderr, name=f"fleet {job.command}")
    n_failed = 0
    t0 = time.monotonic()
    if todo:
        eng = make_engine(engine, address=address, workers=workers)
        try:
            run.workers = eng.workers
            # the workers write the new recordings into OUT themselves, and read --plan: they must see both
            eng.check([] if job.command == "report" else [str(out)] + ([job.plan] if job.plan else []))
            prog.step(f"{run.skipped} already done", run.skipped)
            t0 = time.monotonic()  # from the first task on: engine start-up is not throughput

            def on_result(ref: RecordingRef, res: dict, cpu_s: float, wall_s: float) -> None:
                nonlocal n_failed
                write_json_atomic(result_path(out, ref.key), res)
                run.ran += 1
                run.task_cpu_s += cpu_s
                n_failed += res["status"] != "ok"
                prog.step(f"{run.ran}/{len(todo)} run, {n_failed} failed")

            try:
                eng.run(job, todo, str(out), on_result)
            except KeyboardInterrupt:
                print(f"\nfleet {job.command}: interrupted with {run.skipped + run.ran} of {len(refs)} recordings done; "
                      "the same command again resumes", file=stream or sys.stderr)
                raise
            run.elapsed_s = time.monotonic() - t0
        finally:
            eng.close()
            with open(out / "runs.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                     "command": job.command, "engine": engine, "workers": run.workers,
                                     "recordings": len(refs), "skipped": run.skipped, "ran": run.ran,
                                     "failed": n_failed, "elapsed_s": round(run.elapsed_s or time.monotonic() - t0, 3),
                                     "task_cpu_s": round(run.task_cpu_s, 3), "load_avg": _load(),
                                     "guidance": __version__}) + "\n")
    else:
        prog.step("all already done", len(refs))
    prog.finish()
    run.results = [read_result(out, r.key) or {"key": r.key, "recording": r.location, "status": "failed",
                                                "reason": "no result (the run was interrupted)"} for r in refs]
    write_cohort(run)
    return run
