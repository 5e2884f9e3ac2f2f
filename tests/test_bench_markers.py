"""The marker-stage benchmark runs on real video and reports what `guidance bench` prints (no timing asserted)."""

from guidance.bench.markers import run_marker_bench


def test_marker_bench_reports_stage(sample):
    out = run_marker_bench(str(sample("single_face.mp4")), None, frames=20)
    assert out["frames"] == 20 and out["frame_size"] == [640, 480]
    assert 0 < out["median_ms"] <= out["p99_ms"]
    assert out["tip_found"] >= 15  # the bench measures tracking, not an empty search
