"""The pre-session checklist: what must hold before a session may be armed, each item with its reason.

A failing *safety* item blocks arming (the console refuses to send `arm`, and says
which item and why); a *warning* is shown and does not block. Items:

| item | safety | passes when |
|---|---|---|
| consent | yes | the client's consent is recorded as given, with its date |
| plan | yes | the plan file is the one the console saved (sha256) and passes `parse_plan` |
| models | yes | every model and the atlas match their sha256 in the manifest (`verified_path`) |
| handpiece | yes / warning | the profile loads (safety); pivot-calibrated (warning if only the default offset) |
| camera | warning | a camera calibration is given, and is not older than `MAX_CALIBRATION_AGE_DAYS` |
| disk | yes | room for `DISK_MINUTES` minutes of recording on the recordings' disk |
| controller | yes | (live) a controller is linked and no controller key was refused |

Without a permit endpoint (a dry run: nothing can fire) the controller item is a warning.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from guidance.errors import UserError
from guidance.yamlfile import read_yaml

MAX_CALIBRATION_AGE_DAYS = 180
DISK_MINUTES = 30
MB_PER_MINUTE = 55  # docs/recording.md: ~40 MB/min of video + ~12 MB/min of records at 640x480


@dataclass
class Item:
    key: str
    title: str
    ok: bool
    safety: bool  # a failing safety item blocks arming
    detail: str

    @property
    def blocks(self) -> bool:
        return self.safety and not self.ok


def _age_days(iso: str | None, path: Path) -> tuple[float, str]:
    when = None
    if iso:
        try:
            when = datetime.fromisoformat(str(iso))
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
        except ValueError:
            when = None
    src = "calibrated_at"
    if when is None:
        when, src = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc), "file date"
    return (datetime.now(timezone.utc) - when).total_seconds() / 86400, f"{when:%Y-%m-%d} ({src})"


def camera_item(camera_calibration: str | None) -> Item:
    if not camera_calibration:
        return Item("camera", "Camera calibration", False, False,
                    "not calibrated: default intrinsics (tip depth less exact); run `guidance calibrate camera`")
    p = Path(camera_calibration)
    try:
        from guidance.vision.capture.camera import load_camera
        load_camera(p)
        doc = read_yaml(p, "camera calibration")
    except UserError as exc:
        return Item("camera", "Camera calibration", False, True, f"cannot be read: {exc}")
    age, when = _age_days(doc.get("calibrated_at") if isinstance(doc, dict) else None, p)
    old = age > MAX_CALIBRATION_AGE_DAYS
    return Item("camera", "Camera calibration", not old, False,
                f"{p.name}, calibrated {when}, {age:.0f} days ago" + (f": older than {MAX_CALIBRATION_AGE_DAYS} days, recalibrate"
                                                                     if old else ""))


def handpiece_items(profile_path: str | Path) -> list[Item]:
    from guidance.vision.handpiece.profiles import load_handpiece_profile
    try:
        profile = load_handpiece_profile(profile_path)
    except UserError as exc:
        return [Item("handpiece", "Handpiece profile", False, True, str(exc))]
    pivot = (getattr(profile, "raw", {}) or {}).get("pivot_calibration")
    if isinstance(pivot, dict):
        age, when = _age_days(pivot.get("calibrated_at"), Path(profile.source))
        cal = Item("handpiece_calibration", "Handpiece tip calibration", True, False,
                   f"pivot-calibrated {when}, {age:.0f} days ago, rms {pivot.get('rms_mm', '?')} mm")
    else:
        cal = Item("handpiece_calibration", "Handpiece tip calibration", False, False,
                   "not pivot-calibrated: the profile's nominal tip offset is used; run `guidance calibrate handpiece`")
    return [Item("handpiece", "Handpiece profile", True, True, f"{profile.name} ({Path(profile.source).name})"), cal]


def models_item() -> Item:
    from guidance.resources import read_manifest, verified_path
    try:
        manifest = read_manifest()
        names = list((manifest.get("models") or {}).keys())
        for name in names:
            verified_path(name)
        verified_path("atlas", kind="zones")
    except UserError as exc:
        return Item("models", "Models verified", False, True, str(exc))
    return Item("models", "Models verified", True, True, f"{len(names)} models and the atlas match their sha256")


def disk_item(folder: Path) -> Item:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    need = DISK_MINUTES * MB_PER_MINUTE * 1_000_000
    minutes = free / (MB_PER_MINUTE * 1_000_000)
    ok = free >= need
    return Item("disk", "Disk space for the recording", ok, True,
                f"{free / 1e9:.1f} GB free: about {minutes:.0f} min of recording"
                + ("" if ok else f" (needs room for {DISK_MINUTES} min, {need / 1e9:.1f} GB)"))


def consent_item(given: bool, when: object) -> Item:
    ok = bool(given) and when is not None
    return Item("consent", "Client consent", ok, True,
                f"given on {when}" if ok else "not recorded: record the client's consent (given, date) first")


def plan_item(load) -> Item:
    try:
        plan = load()
    except UserError as exc:
        return Item("plan", "Plan valid", False, True, str(exc))
    return Item("plan", "Plan valid", True, True, f"{plan.plan_id}: {len(plan.zones)} zone(s), margin {plan.margin_mm:g} mm")


def controller_item(configured: bool, state: dict | None) -> Item:
    """From the running session's state: link and refused keys."""
    if not configured:
        return Item("controller", "Controller linked", False, False,
                    "no permit endpoint configured: a dry run, no device can fire")
    if state is None:  # before the session starts: checked live, and a failure then blocks arming
        return Item("controller", "Controller linked", False, False,
                    "checked once the session runs (a missing link or a refused key then blocks arming)")
    link = str(state.get("link", ""))
    refused = int(state.get("key_refusals", 0) or 0)
    if "refused" in link or refused:
        return Item("controller", "Controller linked", False, True,
                    f"controller key refused ({refused}x): the controller's public key is not on the allow-list "
                    "(`guidance keys add-controller`)")
    linked = link.startswith(("connected", "resumed", "restarted"))
    return Item("controller", "Controller linked", linked, True,
                f"{link} (CURVE key accepted)" if linked else f"not linked: {link or 'waiting'}")


def blocking(items: list[Item]) -> list[Item]:
    return [i for i in items if i.blocks]


def as_json(items: list[Item]) -> list[dict]:
    return [{**asdict(i), "blocks": i.blocks} for i in items]
