"""`guidance evaluate`: sessions over face videos x paths x plans, run a few at a time, judged and summed up.

Inputs are checked before any session starts (a user error costs nothing);
each session runs the demo's chain in its own folder (`chain.py`) and is
judged against its ground truth (`judge.py`); a failing session is recorded
with its step and reason and never stops the others. The totals, the
per-face figures and the issue's targets (`checklist`) are computed from the
sessions that ran. JSON: OUT/evaluation.json; tables: `tables.py`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from guidance import __version__, samples
from guidance.errors import UserError
from guidance.evaluate import chain
from guidance.evaluate.face_sets import load_face_sets, training_overlap
from guidance.evaluate.judge import SessionFigures, judge_session
from guidance.evaluate.metrics import Calibration, SafetyCount, UsableShare, stats
from guidance.resources import read_manifest, sha256_file
from guidance.sim.path import load_path
from guidance.zones.atlas import load_atlas
from guidance.zones.plan import TreatmentPlan, load_plan

EVALUATION_VERSION = 1
RESULT_FILE = "evaluation.json"
DEFAULT_PATHS = ("demo_full_face", "exclusion_crossings", "lower_face_glides")

# The targets (issue 12).
TIP_MEDIAN_MM = 1.5
TIP_P90_MM = 3.0
PERMIT_SHARE = 0.90
COVERAGE_PP = 3.0
BEYOND_3_SIGMA = 0.01


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_jobs() -> int:
    """Sessions at once: one core each (a realtime run needs its core), one core left for the rest."""
    return max(1, cores() - 1)


@dataclass(frozen=True)
class SessionSpec:
    key: str  # folder name under OUT/sessions
    face: str  # pinned sample name or video file
    path: str  # path file (bundled paths resolved to their file)
    path_name: str
    plan: TreatmentPlan
    plan_name: str


@dataclass
class SessionResult:
    spec: SessionSpec
    folder: Path
    status: str = "pending"  # ok | failed
    stage: str = ""
    reason: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    figures: SessionFigures | None = None
    load_avg: tuple[float | None, float | None] | None = None  # 1-minute load average at the start and at the end

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"key": self.spec.key, "face": self.spec.face, "path": self.spec.path_name,
                             "plan": self.spec.plan_name, "folder": str(self.folder), "status": self.status,
                             "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
                             "load_avg_1min": list(self.load_avg) if self.load_avg else None}
        if self.status == "failed":
            d["failure"] = {"stage": self.stage, "reason": self.reason}
        if self.figures is not None:
            d["figures"] = self.figures.to_json()
        return d


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def plan_sessions(faces: list[str], paths: list[str], plans: list[str] | None) -> list[SessionSpec]:
    """Every face x path x plan, inputs checked (UserError names the file and field)."""
    atlas = load_atlas()
    for i, f in enumerate(faces):
        if f not in samples.MEMBERS and not Path(f).is_file():
            raise UserError(f"face video {f!r} is neither a file nor a pinned sample (guidance media fetch)",
                            field=f"--faces.{i}")
    loaded_paths = []
    for p in paths:
        sim = load_path(p, atlas)
        loaded_paths.append((str(Path(sim.source).resolve()), Path(sim.source).stem, sim.plan))
    loaded_plans = [(load_plan(p, atlas), Path(p).stem) for p in plans] if plans else None
    specs, seen = [], set()
    for face in faces:
        for path_file, path_name, path_plan in loaded_paths:
            options = loaded_plans if loaded_plans else [(path_plan, None)]
            for plan, plan_name in options:
                if plan is None:
                    raise UserError("the path names no plan: give one with --plans", path=path_file, field="plan")
                name = plan_name or Path(plan.source).stem
                key = base = "__".join(_slug(x) for x in (Path(face).stem, path_name) + ((name,) if loaded_plans else ()))
                n = 1
                while key in seen:  # the same names from different folders
                    n += 1
                    key = f"{base}-{n}"
                seen.add(key)
                specs.append(SessionSpec(key, face, path_file, path_name, plan, name))
    return specs


def _load1() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def earlier_result(spec: SessionSpec, folder: Path) -> SessionResult | None:
    """A session of an earlier evaluation in this folder that ran and kept up, re-judged from its recordings."""
    try:
        old = json.loads((folder / "figures.json").read_text())
        if old.get("status") != "ok" or old["figures"]["run"].get("starved"):
            return None
        res = SessionResult(spec, folder, "ok", seconds=dict(old.get("seconds") or {}),
                            load_avg=tuple(old["load_avg_1min"]) if old.get("load_avg_1min") else None)
        res.figures = judge_session(folder)
        return res
    except (OSError, KeyError, TypeError, ValueError, UserError):
        return None


def run_session(spec: SessionSpec, folder: Path, settings: chain.ChainSettings, run_slots: threading.Semaphore,
                log: Callable[[str], None], *, keep_simulation: bool = False) -> SessionResult:
    res = SessionResult(spec, folder)
    load0 = _load1()
    t0 = time.monotonic()
    try:
        res.seconds = chain.run_chain(spec.face, spec.path, spec.plan, folder, settings, run_slots, log,
                                      keep_simulation=keep_simulation)
        t = time.monotonic()
        res.figures = judge_session(folder)
        res.seconds["judge_s"] = time.monotonic() - t
        res.status = "ok"
    except chain.SessionFailed as exc:
        res.status, res.stage, res.reason = "failed", exc.stage, exc.reason
    except UserError as exc:
        res.status, res.stage, res.reason = "failed", "judge", str(exc)
    except Exception as exc:  # a bug or a broken file in one session must not lose the others
        res.status, res.stage, res.reason = "failed", "judge", f"{type(exc).__name__}: {exc}"
    res.seconds["total_s"] = time.monotonic() - t0
    res.load_avg = (load0, _load1())
    (folder / "figures.json").write_text(json.dumps(res.to_json(), indent=2, default=str) + "\n")
    return res


# ------------------------------------------------------------------------------------------ summing up

@dataclass
class Pool:
    """Figures summed or pooled over several sessions (a face, or all)."""

    sessions: int = 0
    permits: SafetyCount = field(default_factory=SafetyCount)
    permits_lifted: SafetyCount = field(default_factory=SafetyCount)
    pulses: SafetyCount = field(default_factory=SafetyCount)
    pulses_fired: int = 0
    tip_errors_by_zone: dict[str, list[float]] = field(default_factory=dict)
    pulse_errors: list[float] = field(default_factory=list)
    worst_coverage_pp: float = 0.0
    usable: UsableShare = field(default_factory=UsableShare)
    calibration: Calibration = field(default_factory=Calibration)
    contact_frames: int = 0
    exposure: dict[str, Any] = field(default_factory=dict)

    @property
    def tip_errors(self) -> list[float]:
        return [e for v in self.tip_errors_by_zone.values() for e in v]

    def add(self, f: SessionFigures) -> None:
        self.sessions += 1
        self.exposure = _sum_counts(self.exposure, f.exposure)
        self.permits = self.permits.merged(f.permits)
        self.permits_lifted = self.permits_lifted.merged(f.permits_lifted)
        self.pulses = self.pulses.merged(f.pulses)
        self.pulses_fired += f.pulses_fired
        for z, v in f.tip_errors_by_zone.items():
            self.tip_errors_by_zone.setdefault(z, []).extend(v)
        self.pulse_errors += f.pulse_errors_mm
        self.worst_coverage_pp = max(self.worst_coverage_pp, f.coverage_max_diff_pp)
        self.usable = self.usable.merged(f.usable)
        self.calibration = self.calibration.merged(f.calibration)
        self.contact_frames += f.contact_frames

    def to_json(self) -> dict[str, Any]:
        return {"sessions": self.sessions,
                "safety": {"true_tip_frames": self.exposure, "permits": self.permits.to_json(False),
                           "permits_dose_limits_lifted": self.permits_lifted.to_json(False),
                           "pulses": {**self.pulses.to_json(False), "fired": self.pulses_fired}},
                "tip_chart_error_mm": stats(self.tip_errors),
                "tip_chart_error_mm_by_zone": {z: stats(v) for z, v in sorted(self.tip_errors_by_zone.items())},
                "pulse_chart_error_mm": stats(self.pulse_errors),
                "coverage": {"worst_zone_error_pp": self.worst_coverage_pp},
                "usable_permit_share": self.usable.to_json(), "calibration": self.calibration.to_json(),
                "contact_frames": self.contact_frames}


def _sum_counts(a: dict, b: dict) -> dict:
    """Nested dicts of counts, added key by key."""
    out = dict(a)
    for k, v in b.items():
        out[k] = _sum_counts(out.get(k, {}), v) if isinstance(v, dict) else out.get(k, 0) + v
    return out


def checklist(results: list[SessionResult], faces: dict[str, Pool], total: Pool) -> list[dict[str, Any]]:
    """The issue's targets: informative (the figures are the output), never the exit code."""
    ok = [r for r in results if r.figures is not None]
    figs = [r.figures for r in ok if r.figures is not None]  # the same sessions' figures, typed
    items = []

    def item(target: str, passed: bool | None, value: str) -> None:
        items.append({"target": target, "pass": passed, "value": value})

    if not ok:
        item("at least one session ran", False, f"{len(results)} failed")
        return items
    p, pl = total.permits, total.permits_lifted
    item("0 permits in contact with the true tip on an exclusion, also with dose limits lifted",
         p.exclusion_contact == 0 and pl.exclusion_contact == 0,
         f"{p.exclusion_contact} as run, {pl.exclusion_contact} with limits lifted")
    q = total.pulses
    item("0 pulses in contact on an exclusion or beyond the margin",
         q.exclusion_contact == 0 and q.outside_contact == 0,
         f"{q.exclusion_contact} on an exclusion, {q.outside_contact} beyond the margin")
    tips = {name: st for name, pool in faces.items() if (st := stats(pool.tip_errors))["n"]}
    bad = [k for k, st in tips.items() if st["median"] > TIP_MEDIAN_MM or st["p90"] > TIP_P90_MM]
    w = max(tips, key=lambda k: tips[k]["p90"]) if tips else None
    item(f"tip chart error in contact: median <= {TIP_MEDIAN_MM} mm and p90 <= {TIP_P90_MM} mm on every face",
         None if w is None else not bad,
         "no contact frame mapped" if w is None else
         f"{len(bad)} of {len(tips)} faces miss; highest p90: {Path(w).name} median {tips[w]['median']:.2f}, "
         f"p90 {tips[w]['p90']:.2f} mm")
    shares = [(r.spec.key, f.usable.share) for r, f in zip(ok, figs) if f.usable.share is not None]
    low = min(shares, key=lambda kv: kv[1]) if shares else None
    item(f"usable-frame permit share >= {PERMIT_SHARE:.2f} in every session",
         None if low is None else low[1] >= PERMIT_SHARE,
         "no usable frame" if low is None else f"lowest {low[1]:.3f} ({low[0]})")
    cov_r, cov = max(zip(ok, figs), key=lambda rf: rf[1].coverage_max_diff_pp)
    item(f"worst-zone coverage error <= {COVERAGE_PP:g} pp in every session",
         cov.coverage_max_diff_pp <= COVERAGE_PP,
         f"worst {cov.coverage_max_diff_pp:.1f} pp ({cov_r.spec.key})")
    c = total.calibration
    item(f"true lateral error beyond 3 sigma in < {100 * BEYOND_3_SIGMA:g} % of contact frames",
         None if c.share is None else c.share < BEYOND_3_SIGMA,
         "no contact frame with a sigma" if c.share is None else
         f"{100 * c.share:.1f} % of {c.contact_frames} ({c.beyond})")
    starved = [f for f in figs if f.health.get("starved")]
    if starved:
        item("every realtime run kept up (skipped or stale frames <= 10 %)", False,
             f"{len(starved)} of {len(ok)} starved (machine load): their permit shares and pulses reflect the load")
    failed = [r for r in results if r.figures is None]
    if failed:
        item("every session ran", False, f"{len(failed)} of {len(results)} failed: the items above cover the others")
    return items


# ------------------------------------------------------------------------------------------- the run

@dataclass
class EvaluationOptions:
    out: Path
    faces: list[str] | None = None  # default: the face sets' evaluation videos
    paths: list[str] = field(default_factory=lambda: list(DEFAULT_PATHS))
    plans: list[str] | None = None  # default: each path's own plan
    jobs: int | None = None
    max_frames: int | None = None
    size: tuple[int, int] = (640, 480)
    overlay: bool = False
    force: bool = False
    resume: bool = False  # keep the sessions of an earlier evaluation in `out` that ran and kept up


def run_evaluation(opts: EvaluationOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    jobs = opts.jobs if opts.jobs is not None else default_jobs()
    if jobs < 1:
        raise UserError("must be at least 1", field="--jobs")
    face_sets = load_face_sets()
    faces = list(opts.faces) if opts.faces else face_sets.evaluation_videos
    specs = plan_sessions(faces, list(opts.paths), opts.plans)
    out = Path(opts.out)
    if out.exists() and any(out.iterdir()) and not (opts.force or opts.resume):
        raise UserError("output folder exists and is not empty (choose another, --resume to go on with the "
                        "evaluation in it, or --force)", path=out)
    slots = default_jobs()
    if jobs > slots:
        log(f"note: --jobs {jobs} on {cores()} cores: at most {slots} realtime run(s) at once, the other "
            "sessions simulate meanwhile")
    for f in faces:  # fetch once, before sessions race for the same archive
        if f in samples.MEMBERS:
            samples.fetch(f)
    out.mkdir(parents=True, exist_ok=True)
    keys = out / "keys"
    if not (keys / "service.key").exists():
        subprocess.run(chain.guidance_cmd("keys", "generate", str(keys)), check=True, env=dict(os.environ),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    settings = chain.ChainSettings(keys=keys, size=opts.size, max_frames=opts.max_frames, overlay=opts.overlay)
    overlap = training_overlap(faces)
    roles = {f: face_sets.role(f) for f in faces}
    manifest = read_manifest()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    t0 = time.monotonic()
    log(f"guidance evaluate: {len(specs)} session(s) = {len(faces)} face(s) x {len(opts.paths)} path(s)"
        f"{f' x {len(opts.plans)} plan(s)' if opts.plans else ''}, {jobs} at a time; load average "
        f"{' '.join(f'{x:.1f}' for x in load_start) if load_start else '?'} on {cores()} core(s); output {out}")
    grouped: dict[tuple[str, str], list[str]] = {}
    for o in overlap:
        grouped.setdefault((o["face"], o["model"]), []).append(o["field"])
    for (face, model), fields in grouped.items():
        log(f"warning: {face} is in {model}'s {', '.join(fields)} (MANIFEST.json): its figures are not held out "
            "until that model is retrained without it")
    for f, role in roles.items():
        if role == "train":
            log(f"warning: {f} is a training face (guidance/data/face_sets.yaml): its figures are not held out")

    lock = threading.Lock()
    done = [0]
    run_slots = threading.Semaphore(slots)

    def one(k: int, spec: SessionSpec) -> SessionResult:
        tag = f"[{k + 1:>2}/{len(specs)}] {spec.key}"

        def slog(msg: str) -> None:
            with lock:
                log(f"{tag}: {msg}")

        folder = out / "sessions" / spec.key
        res = earlier_result(spec, folder) if opts.resume else None
        if res is not None:
            slog("kept from the earlier run (it ran and kept up), re-judged")
        else:
            slog("start")
            res = run_session(spec, folder, settings, run_slots, slog, keep_simulation=opts.resume)
        with lock:
            done[0] += 1
            elapsed = time.monotonic() - t0
            if res.figures is not None:
                f = res.figures
                share = f.usable.share
                log(f"{tag}: done in {res.seconds['total_s']:.0f} s ({done[0]}/{len(specs)}, {elapsed / 60:.1f} min "
                    f"so far): permits in contact on an exclusion {f.permits.exclusion_contact}, pulses fired "
                    f"{f.pulses_fired}, usable permit share "
                    f"{'n/a' if share is None else f'{share:.2f}'}, tip error median "
                    f"{stats(f.tip_errors_mm).get('median', float('nan')):.2f} mm"
                    + ("; STARVED run (machine load): skipped "
                       f"{100 * (f.health['skipped_share'] or 0):.0f} %, camera_stalled "
                       f"{100 * (f.health['camera_stalled_share'] or 0):.0f} %" if f.health.get("starved") else ""))
            else:
                log(f"{tag}: FAILED at {res.stage}: {res.reason} ({done[0]}/{len(specs)})")
        return res

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(lambda ks: one(*ks), enumerate(specs)))

    per_face: dict[str, Pool] = {}
    total = Pool()
    for r in results:
        if r.figures is not None:
            per_face.setdefault(r.spec.face, Pool()).add(r.figures)
            total.add(r.figures)
    lm = next((r.figures.landmark_model for r in results if r.figures and r.figures.landmark_model), None)
    doc = {
        "evaluation_version": EVALUATION_VERSION,
        "guidance_version": __version__,
        "started_utc": started,
        "duration_s": round(time.monotonic() - t0, 1),
        "session_seconds_sum": round(sum(r.seconds.get("total_s", 0.0) for r in results), 1),
        "machine": {"cores": cores(), "jobs": jobs, "load_avg_start": list(load_start) if load_start else None,
                    "load_avg_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "options": {"faces": faces, "paths": list(opts.paths), "plans": opts.plans, "max_frames": opts.max_frames,
                    "size": list(opts.size), "overlay": opts.overlay},
        "landmark_model": {"name": lm, "sha256": (manifest.get("models", {}).get(lm) or {}).get("sha256") if lm else None},
        "face_sets": {"file": face_sets.source, "sha256": sha256_file(face_sets.source), "roles": roles},
        "training_overlap": overlap,
        "sessions": [r.to_json() for r in results],
        "faces": {f: p.to_json() for f, p in per_face.items()},
        "total": {**total.to_json(), "sessions_failed": sum(r.figures is None for r in results)},
    }
    doc["checklist"] = checklist(results, per_face, total)
    tmp = out / (RESULT_FILE + ".part")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    tmp.replace(out / RESULT_FILE)
    return doc
