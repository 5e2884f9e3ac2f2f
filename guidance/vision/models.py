"""Loading the ONNX models shipped in `models/`, verified against MANIFEST.json.

A model that was swapped, truncated or corrupted on disk must never run on a
client's face: every load recomputes the file's sha256 and compares it with
the manifest written by `models/build.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnxruntime as ort

from guidance.errors import ModelIntegrityError
from guidance.samples import sha256_file


def models_dir() -> Path:
    """`$GUIDANCE_MODELS`, else the repository's `models/` beside the package."""
    env = os.environ.get("GUIDANCE_MODELS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "models"


def read_manifest(directory: Path | None = None) -> dict:
    directory = Path(directory) if directory else models_dir()
    path = directory / "MANIFEST.json"
    if not path.exists():
        raise ModelIntegrityError("model manifest missing (run models/build.py)", path=path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelIntegrityError(f"not valid JSON (line {exc.lineno})", path=path) from None


def verified_path(name: str, directory: Path | None = None, *, kind: str = "models") -> Path:
    """Path to a model or data file whose sha256 matches the manifest."""
    directory = Path(directory) if directory else models_dir()
    manifest = read_manifest(directory)
    entry = manifest.get(kind, {}).get(name)
    if entry is None:
        raise ModelIntegrityError(f"not listed in the manifest under '{kind}'", path=directory / "MANIFEST.json", field=name)
    path = directory / entry["file"]
    if not path.exists():
        raise ModelIntegrityError("model file missing", path=path)
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise ModelIntegrityError(f"sha256 mismatch (expected {entry['sha256'][:12]}…, got {digest[:12]}…): altered or corrupt", path=path)
    return path


def load_model(name: str, directory: Path | None = None, *, threads: int = 1) -> ort.InferenceSession:
    """An onnxruntime session on one intra-op thread (measured faster than two on a 2-core machine)."""
    path = verified_path(name, directory)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def load_topology(directory: Path | None = None) -> dict:
    """Face-mesh connection sets (edge lists) extracted from mediapipe."""
    path = verified_path("face_mesh_topology", directory, kind="data")
    return json.loads(path.read_text())
