"""What a fleet worker keeps between recordings: the ONNX sessions, loaded once per process.

A worker (a Dask worker process, or the one process of `--engine local`) runs
many recordings one after another. Each recording gets a fresh pipeline (its
trackers, filters, skin memory and coverage are that session's), but the models
are the same for all: they are loaded here once, on first use, and shared (the
atlas is already cached per process by `load_atlas`). The ONNX sessions are
stateless between calls (and onnxruntime's `run` is thread-safe), so sharing
them changes no result.

`loads()` counts what this process loaded, so a test can check that each
worker loaded a model once however many recordings it ran.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

_lock = threading.Lock()
_sessions: dict[str, Any] = {}
_loads: Counter[str] = Counter()


def onnx_session(name: str) -> Any:
    """The verified ONNX session of a bundled model (a name in guidance/data/MANIFEST.json models)."""
    with _lock:
        if name not in _sessions:
            from guidance.vision.models import load_model

            _sessions[name] = load_model(name)
            _loads[name] += 1
        return _sessions[name]


def face_tracker(config: Any, camera: Any) -> Any:
    """A new FaceTracker (its own ROI, filter and pose state) on the cached detector and landmark models."""
    from guidance.vision.face.detector import FaceDetector
    from guidance.vision.face.landmarks import FaceLandmarker
    from guidance.vision.face.tracker import FaceTracker

    detector = FaceDetector(min_score=config.min_detection_score, session=onnx_session("face_detection_short_range"))
    landmarker = FaceLandmarker(onnx_session(config.landmark_model))
    return FaceTracker(config, camera, detector=detector, landmarker=landmarker)


def loads() -> dict[str, int]:
    """How many times this process loaded each model: once each, however many recordings ran."""
    with _lock:
        return dict(_loads)
