import time
import warnings

import cv2
import numpy as np
import pytest

from guidance.errors import SourceError
from guidance.vision.capture.sources import CameraSource, ImageSequenceSource, VideoFileSource, open_source


def test_video_frames_carry_index_and_container_timestamps(sample):
    with open_source(sample("single_face.mp4")) as src:
        frames = list(src)
        fps = src.fps
    assert [f.index for f in frames] == list(range(len(frames)))
    t = np.array([f.t_capture_ns for f in frames], dtype=np.int64)
    dt = np.diff(t) / 1e9
    assert np.all(dt > 0)
    # derived from the container: spacing is the frame period, not decode speed
    assert np.median(dt) == pytest.approx(1 / fps, rel=0.02)
    assert frames[0].image.shape == (360, 640, 3)


def test_image_sequence_repeats_a_still_at_a_nominal_rate(sample):
    src = ImageSequenceSource(sample("astronaut.png"), fps=25, repeat=5)
    frames = list(src)
    assert len(frames) == 5
    assert (frames[1].t_capture_ns - frames[0].t_capture_ns) == 40_000_000
    assert np.array_equal(frames[0].image, frames[4].image)


def test_missing_and_corrupt_files_raise_clear_errors_fast(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        open_source(tmp_path / "nope.mp4")
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(20000))
    t0 = time.monotonic()
    with pytest.raises(SourceError) as err:
        with open_source(bad) as src:
            list(src)
    assert str(bad) in str(err.value)
    assert time.monotonic() - t0 < 5
    with pytest.raises(SourceError, match="no images"):
        open_source(str(tmp_path / "*.png"))


def test_unopenable_camera_fails_instead_of_hanging():
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="cannot open camera"):
        CameraSource(97)
    assert time.monotonic() - t0 < 10


def test_live_source_hands_out_the_newest_frame_and_counts_drops(sample):
    """A live stream (here: a file opened through the camera path, decoded as fast as it comes)
    read by a slow consumer: frames it could not take are dropped and counted, never queued."""
    path = sample("WolfgangLanger_Pexels.mp4")
    total = int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT))
    src = CameraSource(str(path), stall_timeout_s=1.0)
    taken = []
    try:
        while True:
            try:
                f = src.read()
            except SourceError as exc:  # end of stream looks like an unplugged camera
                assert "stopped delivering" in str(exc) or "stalled" in str(exc)
                break
            taken.append(f)
            time.sleep(0.02)  # a consumer slower than the decoder
    finally:
        src.close()
    assert src.dropped > 0
    assert len(taken) + src.dropped <= total
    assert len(taken) + src.dropped >= total - 1
    stamps = [f.t_capture_ns for f in taken]
    assert stamps == sorted(stamps)


def test_realtime_file_plays_like_a_camera(sample):
    """Never a frame before its time; a slow consumer skips to the newest frame."""
    with VideoFileSource(sample("single_face.mp4"), realtime=True) as src:
        got = []
        for f in src:
            now = time.monotonic_ns()
            assert f.t_capture_ns <= now + 1_000_000
            # handed out promptly: the frame is at most ~two frame periods old
            assert now - f.t_capture_ns < 2.5e9 / src.fps + 30e6
            got.append(f.index)
            if len(got) > 5:
                time.sleep(2.5 / src.fps)  # slower than the camera
        assert src.dropped > 0
        assert got == sorted(got) and len(got) + src.dropped == 72


def test_realtime_video_with_a_start_time_releases_frame_i_at_t0_plus_i_over_fps(sample):
    """A shared start time (CLOCK_MONOTONIC) makes "which frame is now" the same in every process."""
    t0 = time.monotonic_ns() + 150_000_000  # in the future: the first read waits
    with open_source(sample("single_face.mp4"), realtime=True, start_at_ns=t0, max_frames=4) as src:
        fps = src.fps
        got = []
        for f in src:
            got.append((f.index, f.t_capture_ns, time.monotonic_ns()))
    assert [i for i, _, _ in got] == [0, 1, 2, 3]
    for i, t, released in got:
        assert t == t0 + int(round(i * 1e9 / fps))
        assert released >= t  # never handed out before its capture time


def test_realtime_start_time_in_the_past_skips_to_the_current_frame(sample):
    t0 = time.monotonic_ns() - 1_000_000_000  # the "camera" started a second ago
    with open_source(sample("single_face.mp4"), realtime=True, start_at_ns=t0) as src:
        f = src.read()
        fps = src.fps
        assert f.index >= int(0.9 * fps) and src.dropped == f.index
        assert f.t_capture_ns == t0 + int(round(f.index * 1e9 / fps))


def test_a_start_time_needs_realtime(sample):
    with pytest.raises(SourceError, match="start time"):
        open_source(sample("single_face.mp4"), start_at_ns=1)


# -- issue 14: inputs a new user tries --------------------------------------------------------------------

def test_a_file_read_as_fast_as_possible_is_stamped_when_each_frame_is_read(sample):
    src = VideoFileSource(sample("single_face.mp4"), stamp_on_read=True)
    prev = 0
    for _ in range(10):
        before = time.monotonic_ns()
        f = src.read()
        after = time.monotonic_ns()
        assert f is not None and before <= f.t_capture_ns <= after and f.t_capture_ns > prev
        prev = f.t_capture_ns
    src.close()
    images = ImageSequenceSource(sample("astronaut.png"), repeat=3, stamp_on_read=True)
    before = time.monotonic_ns()
    f = images.read()
    assert before <= f.t_capture_ns <= time.monotonic_ns()


def test_image_sources_take_max_frames_like_video_sources(sample):
    assert len(list(open_source(sample("astronaut.png"), max_frames=1))) == 1
    assert len(list(ImageSequenceSource(sample("astronaut.png"), repeat=5, max_frames=3))) == 3


def test_a_file_that_decodes_nothing_is_refused_at_open(tmp_path, sample):
    (tmp_path / "text.mp4").write_text("not a video\n")
    (tmp_path / "cut.mp4").write_bytes(sample("single_face.mp4").read_bytes()[:3000])
    (tmp_path / "dir.mp4").mkdir()
    for name in ("text.mp4", "cut.mp4", "dir.mp4"):
        with pytest.raises(SourceError, match=name):
            VideoFileSource(tmp_path / name)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(SourceError, match="bad.png"):
        ImageSequenceSource(tmp_path / "bad.png")


def test_a_video_that_ends_before_its_announced_frame_count_says_so_once(tmp_path, sample):
    from guidance.errors import UserNotice

    full, cut = tmp_path / "full.avi", tmp_path / "cut.avi"
    w = cv2.VideoWriter(str(full), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, (160, 120))
    for i in range(60):
        w.write(np.full((120, 160, 3), i * 4, np.uint8))
    w.release()
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.warns(UserNotice, match="of the 60 frames its header announces") as caught:
        n = len(list(VideoFileSource(cut)))
    assert 0 < n < 55 and len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a whole file: no notice
        assert len(list(VideoFileSource(full))) == 60
