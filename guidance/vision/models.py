"""ONNX sessions for the bundled models, each file verified against the manifest before it runs.

A model that was swapped, truncated or corrupted on disk must never run on a
client's face: `guidance.resources.verified_path` recomputes the file's sha256
and compares it with ``guidance/data/MANIFEST.json`` (written by `models/build.py`).
"""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort

from guidance.resources import verified_path


def load_model(name: str, directory: Path | None = None, *, threads: int = 1) -> ort.InferenceSession:
    """An onnxruntime session on one intra-op thread (measured faster than two on a 2-core machine)."""
    path = verified_path(name, directory)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: a user sees our one line, not onnxruntime's warnings
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def load_topology(directory: Path | None = None) -> dict:
    """Face-mesh connection sets (edge lists) extracted from mediapipe."""
    path = verified_path("face_mesh_topology", directory, kind="data")
    return json.loads(path.read_text())
