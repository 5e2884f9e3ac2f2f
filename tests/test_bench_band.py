"""The head-band stage benchmark runs on a rendered scalp session and reports what `guidance bench` prints
(no timing asserted)."""

from guidance.bench.band import run_band_bench


def test_band_bench_reports_stage():
    out = run_band_bench(frames=20)
    assert out["frames"] == 20 and out["frame_size"] == [640, 480]
    assert 0 < out["median_ms"] <= out["p99_ms"]
    assert out["band_found"] >= 18  # the bench measures tracking, not an empty search
