"""The cohort over a fleet run's results: one HTML page in the session report's style, and CSV tables.

Everything is read from the result files (`OUT/results/KEY.json`), never from
the recordings again, so the cohort of ten thousand recordings is written in
seconds on the client. The numbers per recording are `guidance report`'s
(`review/report.session_facts`: pulses, denied frames by reason, coverage per
zone against its target, violations), of the recording as recorded (`fleet
report`) or as re-judged / re-tracked (`fleet reprocess`, `fleet retrack`,
which add the comparison with the recorded decisions). They are summed per
plan, operator and clinic; operator, client and clinic are read from a
recording's info.json when it has them, and shown as "not recorded" otherwise.

`cohort.csv`: one row per recording (failed ones too, with the reason);
`cohort_zones.csv`: one row per recording and planned zone. An unknown value
(not recorded, not measured) is an empty cell.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from guidance.review.templating import TEMPLATES
from guidance.review.report import DENY_TEXT, VIOLATION_TEXT, _e, _kv_table, _reason_css, _when, bars_svg

NOT_RECORDED = "not recorded"
GROUPS = (("plan", "Per plan"), ("operator", "Per operator"), ("clinic", "Per clinic"))
AT_TARGET = 0.98  # a zone counts as done at this share of its cells at target (as the gate's zone-complete)


def _ok(results: Iterable[dict]) -> list[dict]:
    return [r for r in results if r.get("status") == "ok" and r.get("facts")]


def _meta(r: dict, k: str) -> str | None:
    return (r.get("meta") or {}).get(k)


def _plan(r: dict) -> str | None:
    """The plan the recording's numbers are judged against (a reprocess with --plan: the new one)."""
    return (r.get("facts") or {}).get("plan_id") or _meta(r, "plan")


def _group_value(r: dict, k: str) -> str | None:
    return _plan(r) if k == "plan" else _meta(r, k)


def _cmp(r: dict) -> dict:
    return r.get("comparison") or {}


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _cov_mean(d: dict) -> float | None:
    return _mean(list(d.values())) if d else None


def _top(counts: dict[str, int], n: int = 3) -> str:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return ", ".join(f"{k} {v}" for k, v in items) or "–"


def _sum_counts(rows: list[dict], key: str) -> dict[str, int]:
    c: Counter[str] = Counter()
    for r in rows:
        c.update(r["facts"].get(key) or {})
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def _fmt(x: float | None, fmt: str = ".2f") -> str:
    return "–" if x is None else format(x, fmt)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


# ------------------------------------------------------------------------------------------ HTML

def _totals(rows: list[dict], compare: bool) -> dict[str, Any]:
    f = [r["facts"] for r in rows]
    t: dict[str, Any] = {
        "recordings": len(rows), "frames": sum(x["frames"] for x in f), "armed": sum(x["armed_frames"] for x in f),
        "permitted": sum(x["permitted_frames"] for x in f), "pulses": sum(x["pulses"] for x in f),
        "violations": sum(x["violations"] for x in f), "denied": _sum_counts(rows, "denied_frames"),
        "coverage": _mean([x["mean_coverage"] for x in f]),
        "duration_s": sum(x["duration_s"] for x in f),
    }
    if compare:
        c = [_cmp(r) for r in rows]
        t.update(changed=sum(x.get("decisions_changed", 0) for x in c),
                 blocked=sum(len(x.get("pulses_blocked_now") or []) for x in c),
                 permitted_now=sum(len(x.get("violations_permitted_now") or []) for x in c),
                 cov_then=_mean([v for v in (_cov_mean(x.get("coverage_then") or {}) for x in c) if v is not None]),
                 cov_now=_mean([v for v in (_cov_mean(x.get("coverage_now") or {}) for x in c) if v is not None]))
    return t


def _group_table(rows: list[dict], key: str, title: str, compare: bool) -> str:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(_group_value(r, key) or NOT_RECORDED, []).append(r)
    head = ("<tr><th>{}</th><th>recordings</th><th>frames</th><th>permitted / armed</th><th>pulses</th>"
            "<th>violations</th><th>mean zone coverage at target</th><th>top deny reasons (frames)</th>").format(_e(key))
    if compare:
        head += "<th>decisions changed</th><th>pulses now blocked</th><th>coverage then → now</th>"
    body = []
    for name in sorted(groups, key=lambda g: (g == NOT_RECORDED, g)):
        t = _totals(groups[name], compare)
        cls = ' class="none"' if name == NOT_RECORDED else ""
        cells = (f"<td{cls}>{_e(name)}</td><td class=\"n\">{t['recordings']}</td><td class=\"n\">{t['frames']}</td>"
                 f"<td class=\"n\">{_pct(t['permitted'] / t['armed'] if t['armed'] else None)}</td>"
                 f"<td class=\"n\">{t['pulses']}</td><td class=\"n{' bad' if t['violations'] else ''}\">{t['violations']}</td>"
                 f"<td class=\"n\">{_pct(t['coverage'])}</td><td>{_e(_top(t['denied']))}</td>")
        if compare:
            cells += (f"<td class=\"n\">{t['changed']}</td><td class=\"n{' bad' if t['blocked'] else ''}\">{t['blocked']}</td>"
                      f"<td class=\"n\">{_pct(t['cov_then'])} → {_pct(t['cov_now'])}</td>")
        body.append(f"<tr>{cells}</tr>")
    gid = f"by-{key}"
    return f'<section id="{gid}"><h2>{_e(title)}</h2><table>{head}</tr>{"".join(body)}</table></section>'


def _coverage_table(rows: list[dict], compare: bool) -> str:
    per: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        for zone, z in (r["facts"].get("coverage") or {}).items():
            per.setdefault((_plan(r) or NOT_RECORDED, zone), []).append({**z, "_cmp": _cmp(r), "_zone": zone})
    head = ("<tr><th>plan</th><th>zone</th><th>target passes</th><th>recordings</th><th>mean share at target</th>"
            f"<th>mean passes</th><th>recordings at target (≥ {100 * AT_TARGET:.0f}%)</th>"
            "<th>recordings with cells over max</th>")
    if compare:
        head += "<th>mean share at target then</th>"
    body = []
    for (plan, zone), zs in sorted(per.items()):
        mean = _mean([z["fraction_at_target"] for z in zs])
        done = sum(z["fraction_at_target"] >= AT_TARGET for z in zs)
        over = sum(bool(z["cells_over_max"]) for z in zs)
        cells = (f"<td>{_e(plan)}</td><td>{_e(zone)}</td><td class=\"n\">{_e(zs[0]['target'])}</td>"
                 f"<td class=\"n\">{len(zs)}</td><td class=\"n\">{_pct(mean)}</td>"
                 f"<td class=\"n\">{_fmt(_mean([z['mean_passes'] for z in zs]))}</td><td class=\"n\">{done}</td>"
                 f"<td class=\"n{' bad' if over else ''}\">{over}</td>")
        if compare:
            then = _mean([z["_cmp"].get("coverage_then", {}).get(zone, 0.0) for z in zs])
            cells += f"<td class=\"n\">{_pct(then)}</td>"
        body.append(f"<tr>{cells}</tr>")
    note = ("<p>The share of each planned zone's cells that reached the zone's target passes (the report's "
            "coverage), averaged over the recordings of the plan"
            + (", as re-judged (now); then: as recorded." if compare else ".") + "</p>")
    return (f'<section id="coverage"><h2>Coverage against target</h2>{note}'
            f'<table>{head}</tr>{"".join(body)}</table></section>')


def _who(r: dict, name: str) -> str:
    v = _meta(r, name)
    return f"<td>{_e(v)}</td>" if v else f'<td class="none">{NOT_RECORDED}</td>'


def _recordings_table(results: list[dict], compare: bool, retrack: bool) -> str:
    head = ("<tr><th>#</th><th>recording</th><th>session</th><th>started</th><th>plan</th><th>operator</th>"
            "<th>client</th><th>clinic</th><th>frames</th><th>pulses</th><th>violations</th><th>permitted / armed</th>"
            "<th>mean zone coverage at target</th><th>top deny reason</th>")
    if compare:
        head += "<th>decisions changed</th><th>pulses now blocked</th><th>coverage then → now</th>"
    if retrack:
        head += "<th>face found then → now</th><th>skin point moved, median mm</th>"
    head += "<th>result</th>"
    body = []
    for k, r in enumerate(results, 1):
        rec = _e(r["recording"])
        link = f'<a href="{_e(r["output"])}/">{rec}</a>' if r.get("output") else rec
        cells = (f'<td class="n">{k}</td><td>{link}</td><td>{_e(_meta(r, "session_id") or "–")}</td>'
                 f'<td>{_e(_when(_meta(r, "started") or ""))}</td><td>{_e(_plan(r) or "–")}</td>'
                 + "".join(_who(r, name) for name in ("operator", "client", "clinic")))
        f = r.get("facts")
        ncols = 6 + (3 if compare else 0) + (2 if retrack else 0)
        if r.get("status") == "ok" and f:
            cells += (f'<td class="n">{f["frames"]}</td><td class="n">{f["pulses"]}</td>'
                      f'<td class="n{" bad" if f["violations"] else ""}">{f["violations"]}</td>'
                      f'<td class="n">{_pct(f["permitted_frames"] / f["armed_frames"] if f["armed_frames"] else None)}</td>'
                      f'<td class="n">{_pct(f["mean_coverage"])}</td>'
                      f'<td>{_e(next(iter(f["denied_frames"]), "–"))}</td>')
            if compare:
                c = _cmp(r)
                blocked = len(c.get("pulses_blocked_now") or [])
                cells += (f'<td class="n">{c.get("decisions_changed", 0)}</td>'
                          f'<td class="n{" bad" if blocked else ""}">{blocked}</td>'
                          f'<td class="n">{_pct(_cov_mean(c.get("coverage_then") or {}))} → '
                          f'{_pct(_cov_mean(c.get("coverage_now") or {}))}</td>')
            if retrack:
                c = _cmp(r)
                shift = (c.get("chart_shift_mm") or {}).get("median")
                cells += (f'<td class="n">{c.get("face_found_then", 0)} → {c.get("face_found_now", 0)}</td>'
                          f'<td class="n">{_fmt(shift)}</td>')
            cells += '<td class="ok">ok (cut-off recording)</td>' if f.get("truncated") else '<td class="ok">ok</td>'
        else:
            cells += f'<td colspan="{ncols}" class="bad">failed: {_e(r.get("reason"))}</td><td class="bad">failed</td>'
        body.append(f"<tr>{cells}</tr>")
    return f'<section id="recordings"><h2>Recordings</h2><table>{head}</tr>{"".join(body)}</table></section>'


def _failures(results: list[dict]) -> str:
    bad = [r for r in results if r.get("status") != "ok"]
    if not bad:
        return '<section id="failures"><h2>Failed recordings</h2><p class="ok">None: every recording was done.</p></section>'
    rows = "".join(f'<tr><td>{_e(r["recording"])}</td><td class="bad">{_e(r.get("reason"))}</td></tr>' for r in bad)
    return ('<section id="failures"><h2>Failed recordings</h2>'
            f'<p class="bad">{len(bad)} recording(s) could not be done; a rerun of the same command retries them.</p>'
            f'<table><tr><th>recording</th><th>reason</th></tr>{rows}</table></section>')


def cohort_html(run: Any) -> str:
    results = run.results
    rows = _ok(results)
    command = run.job.command
    compare = command in ("reprocess", "retrack")
    t = _totals(rows, compare)
    opts = ", ".join(f"{k} {v}" for k, v in run.job.options().items() if v not in (None, {}, "")) or "none"
    what = {"report": "as recorded", "reprocess": "re-judged from the recorded observations (guidance reprocess)",
            "retrack": "re-tracked from the recorded video and re-judged"}[command]
    overview = [
        ("recordings", f"{len(results)} found, {len(rows)} done, "
                       f'<b class="{"bad" if len(results) - len(rows) else "ok"}">{len(results) - len(rows)} failed</b>'),
        ("numbers", _e(what)),
        ("options", _e(opts)),
        ("frames", f"{t['frames']} ({t['duration_s']:.0f} s), {t['armed']} armed, {t['permitted']} permitted"),
        ("pulses", f"<b>{t['pulses']}</b> delivered" + (" (as re-judged: pulses now blocked are not counted)"
                                                           if compare else "")),
        ("violations", f'<b class="{"bad" if t["violations"] else "ok"}">{t["violations"]}</b>'),
        ("mean zone coverage at target", _pct(t["coverage"])),
    ]
    if compare:
        overview += [("decisions changed", f"{t['changed']} frames"),
                     ("pulses that would now be blocked", f'<b class="{"bad" if t["blocked"] else "ok"}">{t["blocked"]}</b>'),
                     ("violations that would now have been permitted", str(t["permitted_now"])),
                     ("mean zone coverage at target, then → now", f"{_pct(t['cov_then'])} → {_pct(t['cov_now'])}")]
    denied = t["denied"]
    den_rows = "".join(f'<tr><td><span style="color:{_reason_css(r)}">■</span> {_e(r)}</td><td>{_e(DENY_TEXT.get(r, ""))}</td>'
                       f'<td class="n">{n}</td><td class="n">{_pct(n / t["frames"] if t["frames"] else None)}</td>'
                       f'<td class="n">{sum(1 for x in rows if x["facts"]["denied_frames"].get(r))}</td></tr>'
                       for r, n in denied.items())
    den = ('<section id="denials"><h2>Denials by reason</h2>'
           + ('<table><tr><th>reason</th><th>meaning</th><th>frames denied</th><th>share of frames</th>'
              f'<th>recordings</th></tr>{den_rows}</table>{bars_svg(denied)}' if den_rows else '<p class="none">none</p>')
           + "</section>")
    viol = _sum_counts(rows, "violations_by_reason")
    vrows = "".join(f'<tr><td>{_e(r)}</td><td>{_e(VIOLATION_TEXT.get(r, ""))}</td><td class="n">{n}</td></tr>'
                    for r, n in viol.items())
    vio = ('<section id="violations"><h2>Violations</h2>'
           + (f'<table><tr><th>code</th><th>meaning</th><th>pulses</th></tr>{vrows}</table>'
              + bars_svg(viol, lambda _: "#D55E00") if vrows else '<p class="ok">No pulse fired without a valid permit.</p>')
           + "</section>")
    title = f"Fleet {command}: {len(results)} recordings"
    parts = [f'<section id="overview"><h2>Overview</h2>{_kv_table(overview)}</section>']
    parts += [_group_table(rows, k, name, compare) for k, name in GROUPS]
    parts += [_coverage_table(rows, compare), den, vio, _recordings_table(results, compare, command == "retrack"),
              _failures(results)]
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{report_css()}</style></head><body>"
            f"<h1>{_e(title)}</h1><p>Made by guidance fleet review from {len(results)} recording(s) on "
            f"{datetime.now().strftime('%Y-%m-%d %H:%M')}; the tables for analysts are cohort.csv and "
            f"cohort_zones.csv beside this file.</p>{''.join(parts)}</body></html>\n")


# ------------------------------------------------------------------------------------------ CSV

BASE_COLUMNS = ["key", "recording", "status", "reason", "session_id", "started", "plan", "recorded_plan", "operator",
                "client", "clinic", "landmark_model", "duration_s", "frames", "armed_frames", "permitted_frames",
                "pulses", "unplaced_pulses", "violations", "mean_coverage_at_target", "latency_p99_ms", "cut_off"]
COMPARE_COLUMNS = ["decisions_changed", "permitted_then", "permitted_now", "pulses_blocked_now",
                   "violations_permitted_now", "mean_coverage_then", "mean_coverage_now"]
RETRACK_COLUMNS = ["landmark_model_now", "face_found_then", "face_found_now", "tip_valid_then", "tip_valid_now",
                   "zone_changed", "chart_shift_median_mm", "chart_shift_p95_mm", "frames_unjudged"]


def csv_rows(results: list[dict], command: str) -> tuple[list[str], list[dict]]:
    """cohort.csv: columns and one row per recording (denied frames per reason as `denied_<reason>`)."""
    reasons = sorted({k for r in _ok(results) for k in r["facts"]["denied_frames"]})
    violations = sorted({k for r in _ok(results) for k in r["facts"].get("violations_by_reason") or {}})
    cols = list(BASE_COLUMNS)
    if command in ("reprocess", "retrack"):
        cols += COMPARE_COLUMNS
    if command == "retrack":
        cols += RETRACK_COLUMNS
    cols += [f"denied_{k}" for k in reasons] + [f"violations_{k}" for k in violations]
    out = []
    for r in results:
        f = r.get("facts") or {}
        c = _cmp(r)
        row: dict[str, Any] = {"key": r["key"], "recording": r["recording"], "status": r["status"],
                               "reason": r.get("reason"), "session_id": _meta(r, "session_id"),
                               "started": _meta(r, "started"), "plan": _plan(r) if f else _meta(r, "plan"),
                               "recorded_plan": _meta(r, "plan"), "operator": _meta(r, "operator"),
                               "client": _meta(r, "client"), "clinic": _meta(r, "clinic"),
                               "landmark_model": _meta(r, "landmark_model")}
        if f:
            row.update(duration_s=f["duration_s"], frames=f["frames"], armed_frames=f["armed_frames"],
                       permitted_frames=f["permitted_frames"], pulses=f["pulses"], unplaced_pulses=f["unplaced_pulses"],
                       violations=f["violations"], mean_coverage_at_target=f["mean_coverage"],
                       latency_p99_ms=(f.get("latency_ms") or {}).get("p99"), cut_off=f["truncated"])
            row.update({f"denied_{k}": f["denied_frames"].get(k, 0) for k in reasons})
            row.update({f"violations_{k}": (f.get("violations_by_reason") or {}).get(k, 0) for k in violations})
        if c:
            row.update(decisions_changed=c.get("decisions_changed"), permitted_then=c.get("permitted_then"),
                       permitted_now=c.get("permitted_now"), pulses_blocked_now=len(c.get("pulses_blocked_now") or []),
                       violations_permitted_now=len(c.get("violations_permitted_now") or []),
                       mean_coverage_then=_cov_mean(c.get("coverage_then") or {}),
                       mean_coverage_now=_cov_mean(c.get("coverage_now") or {}))
            if command == "retrack":
                shift = c.get("chart_shift_mm") or {}
                row.update(landmark_model_now=c.get("landmark_model_now"), face_found_then=c.get("face_found_then"),
                           face_found_now=c.get("face_found_now"), tip_valid_then=c.get("tip_valid_then"),
                           tip_valid_now=c.get("tip_valid_now"), zone_changed=c.get("zone_changed"),
                           chart_shift_median_mm=shift.get("median"), chart_shift_p95_mm=shift.get("p95"),
                           frames_unjudged=len(c.get("frames_unjudged") or []))
        out.append(row)
    return cols, out


ZONE_COLUMNS = ["key", "session_id", "plan", "operator", "client", "clinic", "zone", "target_passes", "max_passes",
                "cells", "fraction_at_target", "mean_passes", "pulses", "cells_over_max", "fraction_at_target_then"]


def zone_rows(results: list[dict]) -> list[dict]:
    """cohort_zones.csv: one row per recording and planned zone (then: as recorded, for reprocess/retrack)."""
    out = []
    for r in _ok(results):
        then = _cmp(r).get("coverage_then") or {}
        for zone, z in (r["facts"].get("coverage") or {}).items():
            out.append({"key": r["key"], "session_id": _meta(r, "session_id"), "plan": _plan(r),
                        "operator": _meta(r, "operator"), "client": _meta(r, "client"), "clinic": _meta(r, "clinic"),
                        "zone": zone, "target_passes": z["target"], "max_passes": z["max"], "cells": z["cells"],
                        "fraction_at_target": z["fraction_at_target"], "mean_passes": z["mean_passes"],
                        "pulses": z["pulses"], "cells_over_max": z["cells_over_max"],
                        "fraction_at_target_then": then.get(zone) if _cmp(r) else None})
    return out


def _csv_text(cols: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if row.get(k) is None else row[k]) for k in cols})
    return buf.getvalue()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_cohort(run: Any) -> None:
    """cohort.html, cohort.csv and cohort_zones.csv in the run's output folder, each written atomically."""
    cols, rows = csv_rows(run.results, run.job.command)
    _write_atomic(run.out / "cohort.csv", _csv_text(cols, rows))
    _write_atomic(run.out / "cohort_zones.csv", _csv_text(ZONE_COLUMNS, zone_rows(run.results)))
    _write_atomic(run.out / "cohort.html", cohort_html(run))


def report_css() -> str:
    """The report's style sheet (guidance/review/templates/report.css), so the cohort page looks like the report."""
    return (TEMPLATES / "report.css").read_text(encoding="utf-8")
