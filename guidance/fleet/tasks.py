"""One recording, one task: the function every engine calls, in a Dask worker or in this process.

`run_one(job, ref, out_dir)` does for one recording exactly what the
single-process command does (`reprocess` is `guidance reprocess`'s own
function, `report` computes `guidance report`'s numbers with its own
`session_numbers`) and returns the recording's result: a small JSON-able dict
that the client writes to `OUT/results/KEY.json`. It never raises: a recording
that cannot be done comes back with `status: failed` and the reason in one
line, and the others go on.

A result holds nothing of where or when it was made (no worker, no time), so
the same recording gives the same bytes on any engine and any number of
workers.

Re-judged and re-tracked recordings are written by the task itself into
`OUT/recordings/KEY.part/` and renamed to `OUT/recordings/KEY/` when whole;
the client writes the result file last, which is what marks the recording done
(an interrupted run redoes a recording that has a folder but no result).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guidance.errors import UserError
from guidance.fleet.sources import RecordingRef, local_copy

COMMANDS = ("reprocess", "retrack", "report")
RESULTS, RECORDINGS = "results", "recordings"


@dataclass(frozen=True)
class Job:
    """What to do to every recording: the command and its options (the same for all)."""

    command: str
    plan: str | None = None  # reprocess: another plan (an absolute path, readable by every worker)
    margin_mm: float | None = None  # reprocess: another margin
    landmark_model: str | None = None  # retrack: a landmark model in guidance/data/MANIFEST.json
    config_overrides: dict = field(default_factory=dict)  # retrack: pipeline settings laid over the recorded ones

    def options(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "command"}


def recording_meta(info: dict) -> dict:
    """Who, when, what plan: from the recording's info.json (operator, client and clinic only when recorded)."""
    def text(v: Any) -> str | None:
        return None if v is None or v == "" else str(v)

    plan = (info.get("plan") or {}).get("content") or {}
    cfg = info.get("config") or {}
    return {"session_id": text(info.get("session_id")), "started": text(info.get("started_wall")),
            "plan": text(plan.get("plan_id")), "operator": text(info.get("operator")),
            "client": text(info.get("client")), "clinic": text(info.get("clinic")), "source": text(info.get("source")),
            "software": text((info.get("software") or {}).get("guidance")),
            "landmark_model": text(((cfg.get("tracker") or {}).get("landmark_model")) or info.get("landmark_model"))}


def result_facts(facts: Any) -> dict:
    """A session's report facts as a result holds them: who and when are the original recording's (`meta`),
    not a re-judged copy's, so they are left out here."""
    from guidance.review.report import facts_json

    d = facts_json(facts)
    for k in ("session_id", "started"):
        d.pop(k)
    return d


def _facts_of(folder: Path) -> dict:
    from guidance.review.report import session_numbers
    from guidance.session.reader import open_session
    from guidance.zones.atlas import load_atlas

    facts, _, _ = session_numbers(open_session(folder, quiet=True), 1, load_atlas())
    return result_facts(facts)


def output_dir(out_dir: str | Path, key: str) -> Path:
    return Path(out_dir) / RECORDINGS / key


def run_one(job: Job, ref: RecordingRef, out_dir: str) -> dict:
    """Do `job` to one recording; the result (status ok or failed, with the reason), never an exception."""
    result: dict[str, Any] = {"key": ref.key, "recording": ref.location, "command": job.command, "status": "ok",
                              "reason": None, "meta": None, "facts": None, "comparison": None, "output": None}
    final = output_dir(out_dir, ref.key)
    part = final.with_name(final.name + ".part")
    try:
        with local_copy(ref) as folder:
            from guidance.session.reader import read_info

            result["meta"] = recording_meta(read_info(folder))
            if job.command == "report":
                result["facts"] = _facts_of(folder)
            else:
                for d in (part, final):
                    if d.exists():
                        shutil.rmtree(d)
                source_name = ref.location if ref.remote else None
                cmp: Any
                if job.command == "reprocess":
                    from guidance.review.reprocess import reprocess

                    cmp = reprocess(folder, part, plan_path=job.plan, margin_mm=job.margin_mm, source_name=source_name)
                elif job.command == "retrack":
                    from guidance.fleet.retrack import retrack

                    cmp = retrack(folder, part, landmark_model=job.landmark_model,
                                  config_overrides=job.config_overrides or None, source_name=source_name)
                else:
                    raise UserError(f"unknown fleet command {job.command!r}")
                os.replace(part, final)
                result["comparison"] = dataclasses.asdict(cmp)
                result["facts"] = _facts_of(final)
                result["output"] = f"{RECORDINGS}/{ref.key}"
    except UserError as exc:
        result.update(status="failed", reason=str(exc))
    except Exception as exc:  # any other failure of one recording is that recording's, not the run's
        where = traceback.extract_tb(exc.__traceback__)[-1]
        result.update(status="failed", reason=f"{type(exc).__name__}: {exc} ({Path(where.filename).name}:{where.lineno})")
    if result["status"] == "failed":
        result.update(facts=None, comparison=None, output=None)
        shutil.rmtree(part, ignore_errors=True)
    return result


def timed_run_one(job: Job, ref: RecordingRef, out_dir: str) -> tuple[dict, float, float]:
    """`run_one` and what it cost where it ran: (result, CPU seconds of the process, wall seconds). The cost goes
    to the run's log (runs.jsonl), never into the result."""
    c0, t0 = time.process_time(), time.perf_counter()
    res = run_one(job, ref, out_dir)
    return res, time.process_time() - c0, time.perf_counter() - t0


def failed(ref: RecordingRef, job: Job, reason: str) -> dict:
    """The result of a recording whose task never came back (its worker died, the cluster went away)."""
    return {"key": ref.key, "recording": ref.location, "command": job.command, "status": "failed",
            "reason": reason, "meta": None, "facts": None, "comparison": None, "output": None}


def probe(paths: list[str]) -> dict:
    """Run on every worker before the tasks: its guidance version, and which of `paths` it can see."""
    from guidance import __version__

    return {"guidance": __version__, "missing": [p for p in paths if not os.path.exists(p)]}
