"""The figures of one finished evaluation session: its recording and re-judged recording against the truth."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from guidance.errors import UserError
from guidance.evaluate import chain
from guidance.evaluate.metrics import (Calibration, SafetyCount, UsableShare, calibration, permit_safety, place_pulses,
                                       pulse_chart_errors, pulse_safety, run_health, stats, tip_chart_errors_by_zone,
                                       truth_exposure, usable_permit_share)
from guidance.evaluate.truth import PlanTruth
from guidance.session.reader import open_session
from guidance.session.records import PulseEvent
from guidance.sim.demo import _controller_pulses, verify  # the demo's reading of the controller log and check
from guidance.sim.ground_truth import load_ground_truth
from guidance.vision.capture.camera import CameraModel


@dataclass
class SessionFigures:
    permits: SafetyCount
    permits_lifted: SafetyCount  # re-judged with the dose limits lifted
    pulses: SafetyCount
    pulses_fired: int
    pulses_placed: int
    tip_errors_by_zone: dict[str, list[float]]  # contact frames by true zone (kept for pooling; the JSON: stats)
    pulse_errors_mm: list[float]  # pulses fired in contact: service chart point vs the true tip
    coverage_max_diff_pp: float
    coverage: dict[str, dict[str, float]]  # zone -> {service, truth}
    usable: UsableShare
    calibration: Calibration
    health: dict[str, Any]
    contact_frames: int
    violations_recorded: int
    exposure: dict[str, Any]  # frames with the true tip on an exclusion / beyond the margin (truth_exposure)
    landmark_model: str | None = None

    @property
    def tip_errors_mm(self) -> list[float]:
        return [e for v in self.tip_errors_by_zone.values() for e in v]

    def to_json(self) -> dict[str, Any]:
        return {
            "safety": {"true_tip_frames": self.exposure, "permits": self.permits.to_json(),
                       "permits_dose_limits_lifted": self.permits_lifted.to_json(),
                       "pulses": {**self.pulses.to_json(), "fired": self.pulses_fired, "placed": self.pulses_placed},
                       "violations_recorded": self.violations_recorded},
            "tip_chart_error_mm": stats(self.tip_errors_mm),
            "tip_chart_error_mm_by_zone": {z: stats(v) for z, v in sorted(self.tip_errors_by_zone.items())},
            "pulse_chart_error_mm": stats(self.pulse_errors_mm),
            "coverage": {"worst_zone_error_pp": self.coverage_max_diff_pp, "zones": self.coverage},
            "usable_permit_share": self.usable.to_json(),
            "calibration": self.calibration.to_json(),
            "run": self.health,
            "contact_frames": self.contact_frames,
            "landmark_model": self.landmark_model,
        }


def judge_session(folder: str | Path) -> SessionFigures:
    """The figures of a session folder made by `chain.run_chain`."""
    folder = Path(folder)
    sim, log = folder / chain.SIMULATION, folder / chain.CONTROLLER_LOG
    gt = load_ground_truth(sim)
    sim_info = json.loads((sim / "info.json").read_text())
    session = open_session(folder / chain.RECORDING, quiet=True)
    lifted = open_session(folder / chain.LIFTED, quiet=True)
    if not session.frames:
        raise UserError("the recording has no readable frame", path=folder / chain.RECORDING / "frames.jsonl")
    plan = session.plan()
    truth = PlanTruth(plan)
    truths = truth.judge_all(gt)
    fps = float(sim_info.get("fps") or session.info.get("fps") or 30.0)
    frames = session.frames
    fired = _controller_pulses(log) if log.exists() else []
    placed = place_pulses(fired, gt, frames[0].t_capture_ns, frames[0].index, fps) if frames else []
    service_chart = {(e.controller_boot, e.pulse_seq): (e.tip_u, e.tip_v)
                     for e in session.events if isinstance(e, PulseEvent) and e.kind == "pulse"}
    # coverage against the truth and the placement error of pulses in contact, exactly as the demo checks them
    acc = verify(sim, folder / chain.RECORDING, log, plan_path=_recorded_plan_file(session, folder))
    size = frames[0].size if frames else tuple(sim_info.get("frame_size", (640, 480)))
    cam = session.camera()
    cam = cam.scaled_to(*size) if cam is not None else CameraModel.default(*size)
    return SessionFigures(
        permits=permit_safety(frames, truths),
        permits_lifted=permit_safety(lifted.frames, truths),
        pulses=pulse_safety(placed, truths),
        pulses_fired=len(fired), pulses_placed=len(placed),
        tip_errors_by_zone=tip_chart_errors_by_zone(frames, gt),
        pulse_errors_mm=pulse_chart_errors(placed, truths, service_chart),
        coverage_max_diff_pp=acc.coverage_max_diff_pp,
        coverage={z: {"service": acc.coverage_service[z], "truth": acc.coverage_truth[z]} for z in acc.coverage_service},
        usable=usable_permit_share(frames, truths),
        calibration=calibration(frames, gt, float(cam.K[0, 0])),
        health=run_health(frames, len(gt)),
        contact_frames=sum(1 for g in gt if g.contact and g.face_found),
        violations_recorded=acc.violations_recorded,
        exposure=truth_exposure(frames, truths),
        landmark_model=session.info.get("landmark_model"),
    )


def _recorded_plan_file(session, folder: Path) -> Path:
    """The plan as recorded, as a file `verify` can load (its handpiece profile next to it)."""
    hp = folder / "recorded_handpiece.yaml"
    hp.write_text(yaml.safe_dump(session.snapshot("handpiece")["content"]))
    p = folder / "recorded_plan.yaml"
    p.write_text(yaml.safe_dump({**session.snapshot("plan")["content"], "handpiece_profile": hp.name}))
    return p
