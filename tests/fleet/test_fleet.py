"""Fleet review on a real Dask LocalCluster (two worker processes) over 22 real recordings.

Every result is compared byte for byte with the single-process commands:
`guidance reprocess` (its new recording, file by file, and comparison.json),
`guidance report`'s numbers of each session, and for re-tracking (which has no
other command) `--engine local`, the same function in this one process.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from guidance.cli import main
from guidance.fleet import cache
from guidance.fleet.run import run_fleet
from guidance.fleet.sources import find_recordings
from guidance.fleet.tasks import Job, result_facts
from fleet_recordings import COUNT, ROOT

FILES = ("frames.jsonl", "events.jsonl", "landmarks.f32", "video.mjpeg", "comparison.json")
FRESH = ("session_id", "started_wall", "t0_ns")  # what every newly written recording gets of its own


def _info(folder: Path) -> dict:
    info = json.loads((folder / "info.json").read_text())
    for k in FRESH:
        info.pop(k)
    return info


def _same_recording(a: Path, b: Path) -> None:
    for name in FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), f"{a.name}/{name}"
    assert _info(a) == _info(b)


def _results(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "results").iterdir())}


def _by_recording(out: Path) -> dict[str, dict]:
    return {r["recording"]: r for r in (json.loads(b) for b in _results(out).values())}


def test_the_tree_holds_the_recordings(recs):
    refs = find_recordings([str(recs["root"])])
    assert [r.location for r in refs] == recs["recordings"]
    assert len(refs) == COUNT >= 20
    assert len({r.key for r in refs}) == COUNT


@pytest.fixture(scope="module")
def reprocessed(recs, cluster, tmp_path_factory):
    """fleet reprocess --margin 3 on the cluster, and the single-process command on every recording."""
    base = tmp_path_factory.mktemp("reprocess")
    run = run_fleet(Job("reprocess", margin_mm=3.0), [str(recs["root"])], base / "dask", engine="dask",
                    address=cluster, progress=False)
    single = {}
    for k, rec in enumerate(recs["recordings"]):
        dst = base / "single" / f"{k:02d}"
        dst.parent.mkdir(exist_ok=True)
        assert main(["reprocess", rec, "--margin", "3", "-o", str(dst)]) == 0
        single[rec] = dst
    return run, single


def test_dask_reprocess_equals_guidance_reprocess(reprocessed):
    run, single = reprocessed
    assert run.engine == "dask" and run.workers == 2
    assert run.ran == COUNT and not run.failed
    results = _by_recording(run.out)
    assert set(results) == set(single)
    blocked = 0
    for rec, dst in single.items():
        r = results[rec]
        assert r["status"] == "ok", r["reason"]
        out = run.out / r["output"]
        _same_recording(out, dst)
        assert r["comparison"] == json.loads((dst / "comparison.json").read_text())
        blocked += len(r["comparison"]["pulses_blocked_now"])
    assert blocked > 0  # the margin changed something worth comparing


def test_local_engine_gives_the_same_bytes_and_a_rerun_skips_everything(reprocessed, recs, tmp_path):
    run, _ = reprocessed
    local = run_fleet(Job("reprocess", margin_mm=3.0), [str(recs["root"])], tmp_path / "local", progress=False)
    assert local.workers == 1
    assert _results(local.out) == _results(run.out)
    again = run_fleet(Job("reprocess", margin_mm=3.0), [str(recs["root"])], tmp_path / "local", progress=False)
    assert again.skipped == COUNT and again.ran == 0
    assert _results(again.out) == _results(run.out)


def test_dask_report_equals_guidance_report(recs, cluster, tmp_path):
    from guidance.review.report import write_report

    run = run_fleet(Job("report"), [str(recs["root"])], tmp_path / "dask", engine="dask", address=cluster,
                    progress=False)
    single = write_report(recs["recordings"], tmp_path / "report.html", progress=False)
    results = _by_recording(run.out)
    for rec, f in zip(recs["recordings"], single.facts):
        r = results[rec]
        assert r["status"] == "ok", r["reason"]
        assert json.dumps(r["facts"], indent=2) == json.dumps(result_facts(f), indent=2)
        assert r["meta"]["session_id"] == f.session_id and r["meta"]["started"] == f.started
    local = run_fleet(Job("report"), [str(recs["root"])], tmp_path / "local", progress=False)
    assert _results(local.out) == _results(run.out)


def test_dask_retrack_equals_local_and_loads_models_once_per_worker(recs, cluster, tmp_path):
    from dask.distributed import Client

    job = Job("retrack", landmark_model="face_landmark")
    run = run_fleet(job, [str(recs["root"])], tmp_path / "dask", engine="dask", address=cluster, progress=False)
    assert run.ran == COUNT and not run.failed, run.failed[:1]
    local = run_fleet(job, [str(recs["root"])], tmp_path / "local", progress=False)
    assert _results(local.out) == _results(run.out)
    for r in _by_recording(run.out).values():
        _same_recording(run.out / r["output"], local.out / r["output"])
        c = r["comparison"]
        assert c["landmark_model_now"] == "face_landmark" and c["landmark_model_then"] == "face_landmark_occlusion"
        assert c["frames"] == r["facts"]["frames"] and c["chart_shift_mm"]["frames"] > 0
    with Client(cluster) as client:
        loads = client.run(cache.loads)
    assert len(loads) == 2
    for worker_loads in loads.values():  # each worker: every model it used, loaded once, however many recordings
        assert worker_loads and set(worker_loads.values()) == {1}
    assert cache.loads()["face_landmark"] == 1  # the local engine's process too


def test_retrack_keeps_the_recorded_shoulder_line(recs, tmp_path):
    from guidance.fleet.retrack import retrack
    from guidance.session.reader import open_session

    neck = next(r for r in recs["recordings"] if r.endswith("live-neck"))
    retrack(neck, tmp_path / "again")
    old, new = open_session(neck, quiet=True), open_session(tmp_path / "again", quiet=True)
    assert any(r.shoulders is not None for r in old.frames)
    assert [r.shoulders for r in new.frames] == [r.shoulders for r in old.frames]
    assert [r.recorded_gate for r in new.frames] == [r.gate for r in old.frames]


def test_a_failing_recording_is_reported_and_the_others_go_on(recs, cluster, tmp_path):
    import shutil

    root = tmp_path / "mixed"
    good = [Path(p) for p in recs["recordings"][:2]]
    for p in good:
        shutil.copytree(p, root / p.name)
    (root / "empty").mkdir()  # a recording cut off before its first frame
    shutil.copy(good[0] / "info.json", root / "empty" / "info.json")
    (root / "empty" / "frames.jsonl").write_text("")
    (root / "garbled").mkdir()
    (root / "garbled" / "info.json").write_text("{not json")
    (root / "garbled" / "frames.jsonl").write_text("")
    run = run_fleet(Job("reprocess"), [str(root)], tmp_path / "out", engine="dask", address=cluster, progress=False)
    assert run.ran == 4
    bad = {Path(r["recording"]).name: r["reason"] for r in run.failed}
    assert set(bad) == {"empty", "garbled"}
    assert "no readable frames" in bad["empty"] and "info.json" in bad["garbled"]
    assert not list((tmp_path / "out" / "recordings").glob("*.part"))
    page = (tmp_path / "out" / "cohort.html").read_text()
    assert "no readable frames" in page and 'id="failures"' in page
    again = run_fleet(Job("reprocess"), [str(root)], tmp_path / "out", progress=False)
    assert again.skipped == 2 and again.ran == 2  # only the failed ones are tried again


def test_an_interrupted_run_resumes(recs, reprocessed, tmp_path):
    run, _ = reprocessed
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "guidance.cli", "fleet", "reprocess", str(recs["root"]), "--margin", "3",
           "-o", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "results").is_dir() and len(list((out / "results").glob("*.json"))) >= 3:
                break
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    done = len(list((out / "results").glob("*.json")))
    assert 3 <= done < COUNT, "the run should be cut part way"
    # what a writer killed mid-recording leaves: its hidden temporary folder (planted, so it is always there)
    pending = sorted({p.name for p in (run.out / "recordings").iterdir()}
                     - {p.stem for p in (out / "results").glob("*.json")})[0]
    (out / "recordings" / f".{pending}.part.part-planted").mkdir(parents=True)
    again = run_fleet(Job("reprocess", margin_mm=3.0), [str(recs["root"])], out, progress=False)
    assert again.skipped == done and again.ran == COUNT - done and not again.failed
    assert _results(out) == _results(run.out)
    assert sorted(p.name for p in (out / "recordings").iterdir()) == sorted(p.name for p in (run.out / "recordings").iterdir())


def test_file_url_on_the_cluster_and_an_object_store_url_locally(recs, cluster, reprocessed, tmp_path):
    import fsspec

    run, _ = reprocessed
    url = "file://" + str(recs["root"])
    viaurl = run_fleet(Job("reprocess", margin_mm=3.0), [url], tmp_path / "url", engine="dask", address=cluster,
                       progress=False)
    assert _results(viaurl.out) == _results(run.out)  # file:// is read in place: the same recordings, the same keys
    # an object store (fsspec's in-memory one, which lives in this process: the local engine)
    mem = fsspec.filesystem("memory")
    chosen = [Path(p) for p in recs["recordings"][:2]]
    for p in chosen:
        for f in p.iterdir():
            mem.pipe(f"/fleet-test/{p.parent.name}/{p.name}/{f.name}", f.read_bytes())
    try:
        viamem = run_fleet(Job("reprocess", margin_mm=3.0), ["memory://fleet-test"], tmp_path / "mem", progress=False)
    finally:
        mem.rm("/fleet-test", recursive=True)
    assert viamem.ran == 2 and not viamem.failed, viamem.failed[:1]
    ref = _by_recording(run.out)
    for r in viamem.results:
        assert r["recording"].startswith("memory:///fleet-test/")
        name = r["recording"].split("/fleet-test/", 1)[1]
        want = ref[next(str(p) for p in chosen if str(p).endswith(name))]
        assert r["comparison"] == want["comparison"] and r["facts"] == want["facts"]
        new, old = viamem.out / r["output"], run.out / want["output"]
        for f in FILES:
            assert (new / f).read_bytes() == (old / f).read_bytes()
        assert _info(new)["reprocessed_from"]["dir"] == r["recording"]


def test_cohort_report_and_tables(reprocessed, recs):
    run, _ = reprocessed
    page = (run.out / "cohort.html").read_text()
    for sid in ("overview", "by-plan", "by-operator", "by-clinic", "coverage", "denials", "violations",
                "recordings", "failures"):
        assert f'id="{sid}"' in page
    assert "<script" not in page and "not recorded" in page
    rows = list(csv.DictReader((run.out / "cohort.csv").open()))
    assert len(rows) == COUNT and all(r["status"] == "ok" for r in rows)
    results = _by_recording(run.out)
    for row in rows:
        r = results[row["recording"]]
        assert int(row["pulses"]) == r["facts"]["pulses"]
        assert int(row["pulses_blocked_now"]) == len(r["comparison"]["pulses_blocked_now"])
        assert row["operator"] == (r["meta"]["operator"] or "")
        denied = {k[len("denied_"):]: int(v) for k, v in row.items() if k.startswith("denied_") and v}
        assert {k: v for k, v in denied.items() if v} == r["facts"]["denied_frames"]
    assert {r["clinic"] for r in rows} == {"north", "south", ""}
    assert {r["plan"] for r in rows} >= {"example-full-face", "full-face-wide", "forehead", "example-neck-decolletage"}
    zones = list(csv.DictReader((run.out / "cohort_zones.csv").open()))
    assert len(zones) == sum(len(r["facts"]["coverage"]) for r in results.values())
    for group in ("anna", "ben", "north", "south", "forehead"):
        assert f"<td>{group}</td>" in page


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "guidance.cli", "fleet", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_user_errors_are_one_line_exit_2(recs, tmp_path):
    root = str(recs["root"])
    cases = [
        (("retrack", root, "-o", tmp_path / "a", "--landmark-model", "nope"), "unknown landmark model 'nope'"),
        (("report", tmp_path / "missing", "-o", tmp_path / "b"), "folder not found"),
        (("report", root, "-o", tmp_path / "c", "--address", "tcp://127.0.0.1:1"), "--address: only with --engine dask"),
        (("reprocess", root, "-o", tmp_path / "d", "--margin", "-2"), "--margin"),
        (("reprocess", root, "-o", tmp_path / "e", "--plan", tmp_path / "nope.yaml"), "nope.yaml"),
    ]
    for args, text in cases:
        r = _cli(*args)
        assert r.returncode == 2 and text in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    bad = tmp_path / "cfg.yaml"
    bad.write_text("tracker: {smoothnes: false}\n")
    r = _cli("retrack", root, "-o", tmp_path / "f", "--config", bad)
    assert r.returncode == 2 and "tracker.smoothnes: not a pipeline setting" in r.stderr
    # an output folder holds one run's options: another command or options there is refused
    one = recs["recordings"][0]
    assert _cli("report", one, "-o", tmp_path / "g", "--quiet").returncode == 0
    r = _cli("reprocess", one, "-o", tmp_path / "g")
    assert r.returncode == 2 and "another output folder" in r.stderr


def test_retrack_sets_up_the_vision_the_pipeline_would(recs):
    """Re-tracking builds its pipeline with vision=False and the worker's cached models: the same parts as
    GuidancePipeline(vision=True) makes (a change there shows here)."""
    from guidance.fleet.retrack import _RecordedLatency
    from guidance.pipeline import GuidancePipeline, PipelineConfig
    from guidance.session.reader import open_session

    s = open_session(recs["recordings"][0], quiet=True)
    plan, profile = s.plan(), s.profile()
    config = PipelineConfig.from_json(s.config())
    live = GuidancePipeline(plan, profile, config=config, vision=True)
    try:
        assert type(live.face) is type(cache.face_tracker(config.tracker, None))
        assert live.face.config == config.tracker and live.skin is not None and live.shoulders is None
        assert {"value_ms", "add"} <= set(dir(live.latency)) and {"value_ms", "add"} <= set(dir(_RecordedLatency))
    finally:
        live.close()


def test_one_run_at_a_time_in_an_output_folder(recs, tmp_path):
    import fcntl

    from guidance.errors import UserError

    out = tmp_path / "out"
    first = run_fleet(Job("report"), [recs["recordings"][0]], out, progress=False)
    assert first.ran == 1
    with open(out / ".lock", "a") as held:  # as a run in another process holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError, match="another fleet run is writing into this folder"):
            run_fleet(Job("report"), [recs["recordings"][0]], out, progress=False)
    assert run_fleet(Job("report"), [recs["recordings"][0]], out, progress=False).skipped == 1
