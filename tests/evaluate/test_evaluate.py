"""`guidance evaluate` end to end on a tiny set: real processes, a path into an exclusion, a failing session."""

from __future__ import annotations

import json

import pytest
import yaml

from guidance.cli import main
from guidance.evaluate.evaluation import EvaluationOptions, run_evaluation
from guidance.evaluate.tables import report_lines
from guidance.resources import verified_path

# Up the left cheek into the lower lid, and a dwell there: the true tip is on an exclusion within 2 s.
INTO_THE_EYE = {
    "path_version": 1,
    "name": "test-into-the-eye",
    "plan": str(verified_path("full_face", kind="plans")),
    "speed_mm_s": 30,
    "lead_in_s": 0.2,
    "start": [45.0, 30.0],
    "segments": [
        {"type": "line", "toward": "periorbital_left", "depth_mm": 5},
        {"type": "dwell", "duration_s": 1.0},
    ],
}
FRAMES = 75


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory, sample):
    d = tmp_path_factory.mktemp("evaluate")
    path = d / "into_the_eye.yaml"
    path.write_text(yaml.safe_dump(INTO_THE_EYE))
    broken = d / "broken.mp4"
    broken.write_bytes(b"not a video")
    sample("single_face.mp4")
    lines: list[str] = []
    doc = run_evaluation(EvaluationOptions(out=d / "out", faces=["single_face.mp4", str(broken)], paths=[str(path)],
                                           jobs=1, max_frames=FRAMES), log=lines.append)
    return d / "out", doc, lines


def test_the_evaluation_json_has_every_figure(evaluation):
    out, doc, lines = evaluation
    assert json.loads((out / "evaluation.json").read_text()) == json.loads(json.dumps(doc, default=str))
    assert {"sessions", "faces", "total", "checklist", "machine", "landmark_model", "face_sets",
            "training_overlap"} <= set(doc)
    ok = [s for s in doc["sessions"] if s["status"] == "ok"]
    assert len(ok) == 1
    f = ok[0]["figures"]
    assert set(f) >= {"safety", "tip_chart_error_mm", "pulse_chart_error_mm", "coverage", "usable_permit_share",
                      "calibration", "run"}
    assert set(f["safety"]) >= {"true_tip_frames", "permits", "permits_dose_limits_lifted", "pulses"}
    assert f["run"]["frames_simulated"] == FRAMES and 0 < f["run"]["frames_judged"] <= FRAMES
    # the recording carries the gate's total sigma (tip and face mapping): the calibration compares it with the
    # chart error; a frame without it may fall back to the tip's own lateral sigma
    assert "gate.sigma_mm" in f["calibration"]["sigma_sources"]
    assert set(f["calibration"]["sigma_sources"]) <= {"gate.sigma_mm", "tip.sigma_lateral_mm"}
    assert doc["face_sets"]["roles"]["single_face.mp4"] == "train"
    assert doc["machine"]["jobs"] == 1 and doc["machine"]["load_avg_start"] is not None
    assert len(doc["checklist"]) >= 6 and all(it["pass"] in (True, False, None) for it in doc["checklist"])


def test_a_path_into_an_exclusion_is_seen_and_never_permitted(evaluation):
    out, doc, _ = evaluation
    f = next(s for s in doc["sessions"] if s["status"] == "ok")["figures"]
    on_eye = f["safety"]["true_tip_frames"]["simulated"]["exclusion"]
    assert on_eye["contact"] >= 20  # the line's end and the dwell
    assert f["safety"]["true_tip_frames"]["judged"]["exclusion"]["contact"] >= 1
    assert f["safety"]["permits"]["exclusion"]["contact"] == 0
    assert f["safety"]["permits_dose_limits_lifted"]["exclusion"]["contact"] == 0
    assert f["safety"]["pulses"]["exclusion"]["contact"] == 0
    assert doc["total"]["safety"]["true_tip_frames"]["simulated"]["exclusion"]["contact"] == on_eye["contact"]


def test_each_session_keeps_its_folder_and_a_failing_one_loses_nothing(evaluation):
    out, doc, lines = evaluation
    ok = next(s for s in doc["sessions"] if s["status"] == "ok")
    folder = out / "sessions" / ok["key"]
    for name in ("simulation/ground_truth.csv", "session/frames.jsonl", "lifted/frames.jsonl", "lifted_plan.yaml",
                 "controller.jsonl", "run.txt", "figures.json"):
        assert (folder / name).exists(), name
    assert not (folder / "overlay.mp4").exists()  # off by default
    failed = next(s for s in doc["sessions"] if s["status"] != "ok")
    assert failed["failure"]["stage"] == "simulate" and "broken.mp4" in failed["failure"]["reason"]
    assert doc["total"]["sessions_failed"] == 1 and doc["total"]["sessions"] == 1
    assert any("FAILED at simulate" in ln for ln in lines) and any("simulated in" in ln for ln in lines)
    text = "\n".join(report_lines(doc))
    assert "TOTAL" in text and "1 session(s) failed" in text and "[ ] every session ran" in text


def test_the_tables_print_again_from_the_json(evaluation, capsys):
    out, _, _ = evaluation
    assert main(["evaluate", "--print", str(out / "evaluation.json")]) == 0
    assert "Per face" in capsys.readouterr().out


def test_resume_keeps_the_sessions_that_ran_and_redoes_the_failed_one(evaluation):
    out, doc, _ = evaluation
    first = next(s for s in doc["sessions"] if s["status"] == "ok")
    broken = next(s for s in doc["sessions"] if s["status"] != "ok")
    lines: list[str] = []
    again = run_evaluation(EvaluationOptions(out=out, faces=[first["face"], broken["face"]],
                                             paths=doc["options"]["paths"], jobs=1, max_frames=FRAMES, resume=True),
                           log=lines.append)
    kept = next(s for s in again["sessions"] if s["key"] == first["key"])
    if first["figures"]["run"]["starved"]:  # a loaded machine: it runs again, on the same simulation
        assert any("simulation kept" in ln for ln in lines)
    else:
        assert any("kept from the earlier run" in ln for ln in lines)
        assert kept["figures"] == first["figures"]  # re-judged from the same recordings: the same figures
    assert next(s for s in again["sessions"] if s["key"] == broken["key"])["failure"]["stage"] == "simulate"


@pytest.mark.parametrize("argv,message", [
    (["--faces", "nobody.mp4"], "--faces.0: face video 'nobody.mp4' is neither a file nor a pinned sample"),
    (["--paths", "nowhere.yaml"], "nowhere.yaml: path file not found"),
    (["--plans", "noplan.yaml"], "noplan.yaml: plan file not found"),
    (["--jobs", "0"], "--jobs: must be at least 1"),
    (["--size", "640"], "--size: expected WIDTHxHEIGHT"),
])
def test_user_errors_are_one_line_and_exit_code_2(tmp_path, capsys, argv, message):
    assert main(["evaluate", "-o", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()  # nothing started


def test_a_non_empty_output_folder_is_refused(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("")
    assert main(["evaluate", "-o", str(tmp_path / "out"), "--faces", "single_face.mp4"]) == 2
    assert "not empty" in capsys.readouterr().err
