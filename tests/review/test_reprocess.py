"""Re-processing real recordings: a session with a rogue pulse, and one cut off by kill -9."""

import json
import subprocess
import sys
import warnings

import pytest

from guidance.session.reader import open_session
from guidance.review.reprocess import reprocess
from review_sessions import ROOT, make_sessions


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    return make_sessions(tmp_path_factory.getbasetemp() / "review_sessions")


def _open(d):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_session(d)


def test_a_cut_off_recording_reprocesses_exactly(sessions, tmp_path):
    killed = _open(sessions["killed"])
    assert killed.truncated
    cmp = reprocess(sessions["killed"], tmp_path / "again")
    assert cmp.cut_off and "cut off" in cmp.lines()[0]
    assert cmp.frames == len(killed.frames) > 10
    assert cmp.decisions_changed == 0
    again = _open(tmp_path / "again")
    assert [r.gate.permit for r in again.frames] == [r.gate.permit for r in killed.frames]
    assert again.image(0) is not None  # the video passes through untouched


def test_violations_stay_violations(sessions, tmp_path):
    live = _open(sessions["live"])
    recorded = [e for e in live.events if e.kind == "violation"]
    assert recorded  # the simulated controller fired one pulse without a permit
    cmp = reprocess(sessions["live"], tmp_path / "same")
    assert cmp.decisions_changed == 0
    assert cmp.violations == len(recorded)
    out = _open(tmp_path / "same")
    assert len([e for e in out.events if e.kind == "violation"]) == len(recorded)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "guidance.cli", "reprocess", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_user_errors_are_one_line_exit_2(sessions, tmp_path):
    r = _cli(tmp_path / "nope", "-o", tmp_path / "x")
    assert r.returncode == 2 and "nope: recording folder not found" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    r = _cli(tmp_path / "empty", "-o", tmp_path / "x")
    assert r.returncode == 2 and "info.json" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("plan_version: 1\nplan_id: x\n")
    r = _cli(sessions["live"], "--plan", bad, "-o", tmp_path / "y")
    assert r.returncode == 2 and "bad.yaml" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "y").exists()
    r = _cli(sessions["live"], "--margin", "-1", "-o", tmp_path / "z")
    assert r.returncode == 2 and "--margin" in r.stderr
    r = _cli(sessions["live"], "-o", tmp_path / "ok")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "ok" / "comparison.json").read_text())["decisions_changed"] == 0
