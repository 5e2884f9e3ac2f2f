"""Track a whole video: the landmark array, optionally an annotated video (used by the CLI and the demo)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from guidance.vision.capture.camera import CameraModel
from guidance.vision.face.draw import FaceDrawer
from guidance.vision.face.tracker import FaceTracker, TrackerConfig
from guidance.vision.models import load_topology
from guidance.vision.capture.sources import open_source
from guidance.vision.capture.video_out import AtomicVideoWriter


@dataclass
class TrackResult:
    landmarks: np.ndarray  # (frames, 468, 3) float32, NaN where no face
    presence: np.ndarray  # (frames,)
    t_capture_ns: np.ndarray  # (frames,)
    redetections: int
    fps: float

    @property
    def found(self) -> np.ndarray:
        return ~np.isnan(self.landmarks[:, 0, 0])


def track_video(video: str | Path, *, raw: bool = False, camera: CameraModel | None = None,
                annotated: str | Path | None = None, max_frames: int | None = None) -> TrackResult:
    tracker = FaceTracker(TrackerConfig(smoothing=not raw), camera)
    drawer = FaceDrawer(load_topology()) if annotated else None
    rows: list[np.ndarray] = []
    presence: list[float] = []
    stamps: list[int] = []
    writer: AtomicVideoWriter | None = None
    with open_source(video, max_frames=max_frames) as src:
        try:
            for frame in src:
                obs = tracker.process(frame)
                if obs.found:
                    assert obs.landmarks is not None, "a found face has landmarks"
                    rows.append(obs.landmarks)
                else:
                    rows.append(np.full((468, 3), np.nan, np.float32))
                presence.append(obs.presence)
                stamps.append(frame.t_capture_ns)
                if drawer is not None:
                    if writer is None:
                        assert annotated is not None, "the drawer exists only with an annotated path"
                        writer = AtomicVideoWriter(annotated, src.fps, frame.size)
                    writer.write(drawer.draw(frame.image.copy(), obs, camera))
        except BaseException:
            if writer is not None:
                writer.close(keep=False)
            raise
        if writer is not None:
            writer.close()
        fps = src.fps
    lm = np.stack(rows).astype(np.float32) if rows else np.zeros((0, 468, 3), np.float32)
    return TrackResult(lm, np.asarray(presence, np.float32), np.asarray(stamps, np.int64), tracker.redetections, fps)
