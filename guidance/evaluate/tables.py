"""The printed tables of an evaluation, made from its JSON (so a saved evaluation.json prints the same)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _f(x: Any, fmt: str = ".2f", none: str = "-") -> str:
    return none if x is None else format(x, fmt)


def _tip(st: dict) -> str:
    return "-" if not st or not st.get("n") else f"{st['median']:.2f}/{st['p90']:.2f}/{st['max']:.1f} ({st['n']})"


def _cl(d: dict) -> str:
    return f"{d['contact']}/{d['lifted']}"


def _share(u: dict) -> str:
    return "-" if u.get("share") is None else f"{u['share']:.3f} ({u['counted']})"


def _top_reason(u: dict) -> str:
    denied = u.get("denied") or {}
    if not denied:
        return "-"
    k, v = next(iter(denied.items()))
    return f"{k} {100 * (v['share'] or 0):.0f}%"


def _calib(c: dict) -> str:
    return "-" if c.get("share") is None else f"{100 * c['share']:.1f}% ({c['contact_frames']})"


def _calib_chart(c: dict) -> str:
    return "-" if c.get("share_chart_error") is None else f"{100 * c['share_chart_error']:.0f}%"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def report_lines(doc: dict[str, Any]) -> list[str]:
    out: list[str] = []
    sessions = doc["sessions"]
    ran = [s for s in sessions if "figures" in s]
    total = doc["total"]

    out += ["", "Safety, contact/lifted by the true tip. tip excl/out: judged frames with the true tip on an exclusion / "
                "outside the plan beyond the margin; permit: of those, permitted; lifted-limits: permitted when "
                "re-judged with the dose limits lifted; pulses: fired by the controller, and where"]
    rows = []
    for s in ran:
        f = s["figures"]
        sf = f["safety"]
        rows.append([s["key"], str(f["run"]["frames_simulated"]), str(f["contact_frames"]),
                     _cl(sf["true_tip_frames"]["judged"]["exclusion"]),
                     _cl(sf["true_tip_frames"]["judged"]["outside_plan_beyond_margin"]), _cl(sf["permits"]["exclusion"]),
                     _cl(sf["permits"]["outside_plan_beyond_margin"]),
                     _cl(sf["permits_dose_limits_lifted"]["exclusion"]),
                     _cl(sf["permits_dose_limits_lifted"]["outside_plan_beyond_margin"]),
                     str(sf["pulses"]["fired"]), _cl(sf["pulses"]["exclusion"]),
                     _cl(sf["pulses"]["outside_plan_beyond_margin"])])
    ts = total["safety"]
    if ran:
        rows.append(["TOTAL", str(sum(s["figures"]["run"]["frames_simulated"] for s in ran)),
                     str(total["contact_frames"]), _cl(ts["true_tip_frames"]["judged"]["exclusion"]),
                     _cl(ts["true_tip_frames"]["judged"]["outside_plan_beyond_margin"]), _cl(ts["permits"]["exclusion"]),
                     _cl(ts["permits"]["outside_plan_beyond_margin"]), _cl(ts["permits_dose_limits_lifted"]["exclusion"]),
                     _cl(ts["permits_dose_limits_lifted"]["outside_plan_beyond_margin"]), str(ts["pulses"]["fired"]),
                     _cl(ts["pulses"]["exclusion"]), _cl(ts["pulses"]["outside_plan_beyond_margin"])])
    out += _table(["session", "frames", "contact", "tip excl", "tip out", "permit excl", "permit out", "lifted-limits excl",
                   "lifted-limits out", "pulses", "pulse excl", "pulse out"], rows)

    out += ["", "Quality. tip/pulse chart error in contact, mm: median/p90/max (n); coverage: worst zone vs truth, pp; "
                "usable: permit share of usable frames (n); >3σ: contact frames whose true error (of the kind the gate's σ "
                "describes) > 3σ; >3σ chart: the chart error > 3σ; "
                "run: frames skipped / camera_stalled; load: 1-minute load average when the session started"]
    rows = []
    for s in ran:
        f = s["figures"]
        run = f["run"]
        rows.append([s["key"], _tip(f["tip_chart_error_mm"]), _tip(f["pulse_chart_error_mm"]),
                     _f(f["coverage"]["worst_zone_error_pp"], ".1f"), _share(f["usable_permit_share"]),
                     _top_reason(f["usable_permit_share"]), _calib(f["calibration"]), _calib_chart(f["calibration"]),
                     f"{100 * (run['skipped_share'] or 0):.0f}%/{100 * (run['camera_stalled_share'] or 0):.0f}%"
                     + (" STARVED" if run.get("starved") else ""),
                     _f((s.get("load_avg_1min") or [None])[0], ".1f")])
    if ran:
        rows.append(["TOTAL", _tip(total["tip_chart_error_mm"]), _tip(total["pulse_chart_error_mm"]),
                     _f(total["coverage"]["worst_zone_error_pp"], ".1f"), _share(total["usable_permit_share"]),
                     _top_reason(total["usable_permit_share"]), _calib(total["calibration"]),
                     _calib_chart(total["calibration"]), "", ""])
    out += _table(["session", "tip error", "pulse error", "cov pp", "usable share", "first deny reason", ">3σ",
                   ">3σ chart", "run", "load"], rows)

    out += ["", "Per face (all its sessions pooled)"]
    rows = []
    for face, p in doc["faces"].items():
        rows.append([Path(face).name, (doc["face_sets"]["roles"].get(face) or "other"), str(p["sessions"]),
                     _tip(p["tip_chart_error_mm"]), _share(p["usable_permit_share"]),
                     _top_reason(p["usable_permit_share"]), _calib(p["calibration"]), _calib_chart(p["calibration"]),
                     _cl(p["safety"]["permits"]["exclusion"]), _f(p["coverage"]["worst_zone_error_pp"], ".1f")])
    out += _table(["face", "set", "sessions", "tip error mm", "usable share", "first deny reason", ">3σ", ">3σ chart",
                   "permit excl", "cov pp"], rows)

    by_zone = total.get("tip_chart_error_mm_by_zone") or {}
    if by_zone:
        out += ["", "Tip chart error in contact by true zone, all sessions (mm: median/p90/max (n))"]
        rows = [[z, _tip(st)] for z, st in sorted(by_zone.items(), key=lambda kv: -(kv[1].get("median") or 0))]
        out += _table(["zone", "tip error"], rows)

    failed = [s for s in sessions if s["status"] != "ok"]
    if failed:
        out += ["", f"{len(failed)} session(s) failed:"]
        out += [f"  {s['key']}: {s['failure']['stage']}: {s['failure']['reason']}" for s in failed]
    if doc.get("training_overlap"):
        grouped: dict[tuple[str, str], list[str]] = {}
        for o in doc["training_overlap"]:
            grouped.setdefault((o["face"], o["model"]), []).append(o["field"])
        out += [""] + [f"note: {face} is in {model}'s {', '.join(fields)}: not held out until retrained"
                       for (face, model), fields in grouped.items()]
    m = doc["machine"]
    def load(v):
        return " ".join(f"{x:.1f}" for x in v) if v else "?"
    out += ["", f"Targets (issue 12; informative, not the exit code). Landmark model {doc['landmark_model']['name']}; "
                f"{len(sessions)} session(s) in {doc['duration_s'] / 60:.1f} min "
                f"({doc.get('session_seconds_sum', 0) / 60:.0f} min of sessions), {m['jobs']} at a time on "
                f"{m['cores']} core(s); load average {load(m['load_avg_start'])} at the start, "
                f"{load(m['load_avg_end'])} at the end"]
    for it in doc["checklist"]:
        mark = {True: "[x]", False: "[ ]", None: "[?]"}[it["pass"]]
        out.append(f"  {mark} {it['target']}: {it['value']}")
    return out
