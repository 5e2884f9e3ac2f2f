"""Re-tracking a recording: the face and handpiece tracked again from its video, then judged.

`reprocess` re-judges the recorded observations exactly; re-tracking asks what
a *new landmark model* (or tracker setting) would have changed: every recorded
frame (the JPEG the recorder kept, `Session.image`) goes through
`GuidancePipeline.process` again — skin memory, face tracker, handpiece
tracker, mapping σ, zone lookup, gate — with the new model, and the decision
is compared with the recorded one.

What is held to the recording, so that only the vision changes and the result
is a deterministic function of the recording and the model:
- time: the pipeline's clock reads the frame's recorded "now" (`t_decided_ns`),
  so freshness is judged as it was; the look-ahead uses the recorded pipeline
  latency;
- the armed state is the recorded one (the operator's arming is history; the
  face-lost auto-disarm of the live app is not re-enacted);
- the shoulder line is the recorded one (the pose model ran on its own thread
  at a reduced rate live; re-running it would not be the same frames);
- pulses were fired in reality: they reach coverage after the frame they
  landed after, and a pulse whose permit's frame the new gate denies "would
  now be blocked" (the same rules as `reprocess`, `review/reprocess.rejudge`).

The vision itself runs on the recorded JPEGs, not the camera's frames, so even
the recorded model gives slightly different observations: compare a new model
with a re-track under the recorded model, not only with the record. A frame
recorded without its image keeps its recorded decision and is listed
(`frames_unjudged`).

The models come from the worker's cache (`fleet/cache.py`): loaded once per
process whatever the number of recordings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from guidance.errors import UserError
from guidance.fleet import cache
from guidance.pipeline import GuidancePipeline, PipelineConfig
from guidance.resources import read_manifest
from guidance.review.reprocess import Comparison, ReplayClock, derived_info, rejudge
from guidance.session import records as rec
from guidance.session.reader import open_session
from guidance.vision.capture.sources import Frame
from guidance.vision.face.skin_memory import SkinMemory


@dataclass
class RetrackComparison(Comparison):
    """`Comparison` and what the vision changed."""

    landmark_model_then: str = ""
    landmark_model_now: str = ""
    config_overrides: dict = field(default_factory=dict)
    face_found_then: int = 0
    face_found_now: int = 0
    tip_valid_then: int = 0
    tip_valid_now: int = 0
    zone_changed: int = 0  # frames whose tip zone differs (either side may have none)
    # distance between the recorded and the new skin point (chart mm), over frames with both: median, p95, max
    chart_shift_mm: dict = field(default_factory=dict)
    frames_unjudged: list[int] = field(default_factory=list)  # recorded without an image: decision kept
    faults: list[dict] = field(default_factory=list)  # hot-path faults while re-tracking (frame, error)

    def lines(self) -> list[str]:
        out = [f"landmark model {self.landmark_model_then} → {self.landmark_model_now}"
               + (f", config {self.config_overrides}" if self.config_overrides else "")]
        out += super().lines()
        shift = self.chart_shift_mm
        out.append(f"face found then {self.face_found_then}, now {self.face_found_now}; tip found then "
                   f"{self.tip_valid_then}, now {self.tip_valid_now}; zone changed in {self.zone_changed} frames"
                   + (f"; skin point moved median {shift['median']:.2f} mm, p95 {shift['p95']:.2f} mm "
                      f"(max {shift['max']:.2f}) over {shift['frames']} frames" if shift.get("frames") else ""))
        if self.frames_unjudged:
            out.append(f"{len(self.frames_unjudged)} frame(s) recorded without an image kept their recorded decision")
        if self.faults:
            out.append(f"{len(self.faults)} hot-path fault(s), first: frame {self.faults[0]['frame']}: "
                       f"{self.faults[0]['error']}")
        return out


def landmark_models() -> list[str]:
    """The bundled face landmark models a re-track may use (names in guidance/data/MANIFEST.json)."""
    return sorted(k for k in read_manifest()["models"] if k.startswith("face_landmark"))


def check_landmark_model(name: str | None) -> None:
    if name is not None and name not in landmark_models():
        raise UserError(f"unknown landmark model {name!r} (bundled: {', '.join(landmark_models())})",
                        field="--landmark-model")


def merged_config(recorded: dict, overrides: dict | None, *, source: str = "--config") -> dict:
    """The recorded pipeline configuration with `overrides` (a part of `PipelineConfig.to_json()`) laid over it.

    A key the configuration does not have is a user error naming it (PipelineConfig.from_json would drop it)."""
    if not overrides:
        return recorded
    if not isinstance(overrides, dict):
        raise UserError("must be a mapping of pipeline settings (see info.json's config)", path=source)

    def merge(base: Any, over: dict, known: Any, where: str) -> dict:
        out = dict(base) if isinstance(base, dict) else {}
        for k, v in over.items():
            if not isinstance(known, dict) or k not in known:
                raise UserError("not a pipeline setting", path=source, field=f"{where}{k}")
            if isinstance(known[k], dict):
                if not isinstance(v, dict):
                    raise UserError("must be a mapping", path=source, field=f"{where}{k}")
                out[k] = merge(out.get(k), v, known[k], f"{where}{k}.")
            else:
                out[k] = v
        return out

    return merge(recorded, overrides, PipelineConfig().to_json(), "")


class _RecordedLatency:
    """Stands in for the pipeline's latency tracker: the look-ahead latency the frame was judged with."""

    def __init__(self) -> None:
        self.ms = 0.0

    def value_ms(self) -> float:
        return self.ms

    def add(self, *_: Any) -> None:
        pass


class _RecordedShoulders:
    """Stands in for the pose model's thread: the shoulder line the frame used, as recorded."""

    def __init__(self) -> None:
        self.current: Any = None

    def submit(self, *_: Any, **__: Any) -> bool:
        return True

    def latest(self, now_ns: int | None = None) -> Any:
        return self.current

    def close(self) -> None:
        pass


def retrack(session_dir: str | Path, out_dir: str | Path, *, landmark_model: str | None = None,
            config_overrides: dict | None = None, progress=None, source_name: str | None = None) -> RetrackComparison:
    """Track the recording's video again (a new landmark model or tracker settings) and judge it; writes a new
    recording into `out_dir` with comparison.json, like `reprocess`."""
    check_landmark_model(landmark_model)
    session = open_session(session_dir, quiet=True)
    if not session.frames:
        raise UserError("the recording has no readable frames", path=session.dir / "frames.jsonl")
    plan = session.plan()
    profile = session.profile()
    camera = session.camera()
    recorded_cfg = session.config()
    then = PipelineConfig.from_json(recorded_cfg)
    config = PipelineConfig.from_json(merged_config(recorded_cfg, config_overrides))
    if landmark_model is not None:
        config = dataclasses.replace(config, tracker=dataclasses.replace(config.tracker, landmark_model=landmark_model))
    clock = ReplayClock()
    # vision=False loads no model; the vision parts are then set up as GuidancePipeline does for vision=True,
    # with the worker's cached models, and time, latency and shoulders held to the recording (module doc)
    pipe = GuidancePipeline(plan, profile, config=config, camera=camera, clock=clock, vision=False)
    pipe.face = cache.face_tracker(config.tracker, camera)
    pipe.skin = SkinMemory() if config.skin_memory else None
    latency = _RecordedLatency()
    pipe.latency = latency  # type: ignore[assignment]
    shoulders = _RecordedShoulders() if any(r.shoulders is not None for r in session.frames) else None
    pipe.shoulders = shoulders  # type: ignore[assignment]

    cmp = RetrackComparison(damage=list(session.damage), cut_off=not any(e.kind == "session_end" for e in session.events),
                            landmark_model_then=then.tracker.landmark_model,
                            landmark_model_now=config.tracker.landmark_model,
                            config_overrides=dict(config_overrides or {}))
    shifts: list[float] = []

    def judge_frame(i: int, r: rec.FrameRecord) -> tuple[rec.FrameRecord, Any]:
        old = r.gate
        cmp.face_found_then += r.face.found
        cmp.tip_valid_then += r.tip is not None and r.tip.valid
        image = session.image(i)
        if image is None:  # recorded without its image: nothing to track; the recorded decision stands
            cmp.frames_unjudged.append(i)
            cmp.face_found_now += r.face.found
            cmp.tip_valid_now += r.tip is not None and r.tip.valid
            return (dataclasses.replace(r, recorded_gate=old, video=None, landmarks=None),
                    session.landmarks(i) if r.face.found else None)
        pipe.state.armed, pipe.state.paused = r.armed, False
        latency.ms = old.lookahead_latency_ms
        if shoulders is not None:
            shoulders.current = rec.observations(r, None)[3]
        result = pipe.process(Frame(r.index, r.t_capture_ns, image))
        while pipe.events:
            e = pipe.events.popleft()
            if isinstance(e, rec.Fault):
                cmp.faults.append({"frame": i, "error": e.error})
        new = dataclasses.replace(result.record(), t_face_ns=r.t_face_ns, t_tip_ns=r.t_tip_ns, t_zone_ns=r.t_zone_ns,
                                  t_published_ns=r.t_published_ns,
                                  gate=rec.gate_record(result.decision, old.seq, old.lookahead_latency_ms),
                                  recorded_gate=old, video=None, landmarks=None)
        cmp.face_found_now += new.face.found
        cmp.tip_valid_now += new.tip is not None and new.tip.valid
        z_then = r.zone.zone if r.zone is not None else None
        z_now = new.zone.zone if new.zone is not None else None
        cmp.zone_changed += z_then != z_now
        if r.zone is not None and new.zone is not None and r.zone.chart_mm is not None and new.zone.chart_mm is not None:
            shifts.append(float(np.hypot(new.zone.chart_mm[0] - r.zone.chart_mm[0],
                                         new.zone.chart_mm[1] - r.zone.chart_mm[1])))
        return new, result.face.landmarks if result.face.found else None

    def finish() -> None:
        if shifts:
            a = np.asarray(shifts)
            cmp.chart_shift_mm = {"frames": int(a.size), "median": float(np.median(a)),
                                  "p95": float(np.percentile(a, 95)), "max": float(a.max())}

    info = derived_info(session, session_dir, config, source_name=source_name)
    info["reprocessed_from"].update({"retracked": True, "landmark_model": config.tracker.landmark_model,
                                     "config_overrides": dict(config_overrides or {}), "damage": list(session.damage)})
    info["landmark_model"] = config.tracker.landmark_model
    try:
        rejudge(session, pipe, plan, out_dir, info, judge_frame, cmp, clock, progress=progress, before_end=finish)
    finally:
        pipe.close()
    return cmp
