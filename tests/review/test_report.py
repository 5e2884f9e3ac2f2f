"""`guidance report`: every section present, numbers equal to the recording, self-contained, a cohort
table for several sessions, and the page loaded by a real headless Chromium without errors."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile

import cv2
import numpy as np
import pytest

from guidance.cli import main
from guidance.review.report import SECTIONS
from guidance.review.timeline import load_timeline
from review_sessions import make_sessions


@pytest.fixture(scope="session")
def sessions(tmp_path_factory):
    return make_sessions(tmp_path_factory.getbasetemp() / "review_sessions")


@pytest.fixture(scope="module")
def report(sessions, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    rc = main(["report", str(sessions["with_pulses"]), str(sessions["killed"]), "-o", str(out)])
    assert rc == 0
    return out, out.read_text()


def section(doc: str, sid: str) -> str:
    m = re.search(rf'<section id="{re.escape(sid)}">(.*?)</section>', doc, re.S)
    assert m, f"section {sid} missing"
    return m.group(1)


def test_every_section_for_every_session_and_a_cohort(report):
    _, doc = report
    for k in (1, 2):
        for name in SECTIONS:
            section(doc, f"{name}-{k}")
    cohort = section(doc, "cohort")
    assert cohort.count('<a href="#summary-') == 2
    assert "cut off" in cohort and "complete" in cohort


def test_numbers_match_the_recording(report, sessions):
    _, doc = report
    tl = load_timeline(sessions["with_pulses"])
    summary = section(doc, "summary-1")
    assert f"<b>{len(tl.pulses)}</b> delivered" in summary
    assert f"{tl.n} frames" in summary
    den = section(doc, "denials-1")
    by_reason = {}
    for p, r in zip(tl.permit, tl.reason):
        if not p:
            by_reason[r] = by_reason.get(r, 0) + 1
    assert by_reason
    for reason, n in by_reason.items():
        m = re.search(rf"{reason}</td><td>[^<]*</td><td class=\"n\">(\d+)</td>", den)
        assert m and int(m.group(1)) == n, reason
    # coverage rebuilt from the pulses equals the coverage event written at the end
    assert "identical to the coverage the live app saved" in section(doc, "coverage-1")
    cov_rows = re.findall(r"<tr><td>(\w+)</td><td class=\"n\">\d+</td><td class=\"n\">\d+</td>"
                          r"<td class=\"n[^\"]*\">[\d.]+%</td><td class=\"n\">[\d.]+</td><td class=\"n\">(\d+)</td>",
                          section(doc, "coverage-1"))
    assert {z for z, _ in cov_rows} == set(tl.plan.zones)
    placed = sum(int(n) for _, n in cov_rows)
    assert 0 < placed <= len(tl.pulses)
    # the controller's rogue pulse is a violation with a thumbnail of its frame
    vio = section(doc, "violations-1")
    assert len(tl.violations) >= 1
    assert f"{len(tl.violations)} pulse(s) fired without a valid permit" in vio
    assert vio.count("data:image/jpeg;base64,") == len(tl.violations)
    assert "no_permit" in vio
    # latency numbers are the recording's
    lat = section(doc, "latency-1")
    p50 = float(np.percentile(tl.latency_ms[np.isfinite(tl.latency_ms)], 50))
    assert f"{p50:.2f}" in lat


def test_cut_off_session_is_reported_with_a_warning(report, sessions):
    _, doc = report
    assert "Cut-off recording" in section(doc, "summary-2")
    assert "not saved (cut-off recording)" in section(doc, "coverage-2")


def test_self_contained(report):
    _, doc = report
    assert "<script" not in doc
    srcs = re.findall(r'src="([^"]+)"', doc)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert "href=\"http" not in doc and "url(" not in doc


def test_progress_bar_and_user_errors(sessions, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(sessions["live"]), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "report [" in err and "100%" in err
    assert main(["report", str(sessions["live"]), "-o", str(tmp_path / "nope" / "r.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]
    assert main(["report", str(tmp_path), "-o", str(out)]) == 2
    assert "info.json" in capsys.readouterr().err


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("Debian chromium is needed for the browser check (.ci/run installs it)")
    return exe


def test_headless_chromium_renders_every_section_without_errors(report, tmp_path):
    exe = _chromium()
    path, _ = report
    url = path.resolve().as_uri()
    with tempfile.TemporaryDirectory() as prof:
        dom = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={prof}", "--enable-logging=stderr", "--v=0",
                              "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for k in (1, 2):
        for name in SECTIONS:
            assert f'id="{name}-{k}"' in dom.stdout
    assert 'id="cohort"' in dom.stdout
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as prof:
        r = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={prof}", f"--screenshot={shot}",
                            "--window-size=1200,3000", url], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (3000, 1200)
    assert img.std() > 20  # a laid-out page with pictures, not a blank or error page
