"""Where the build scripts in models/ put what they make: the package's data folder and its one manifest.

The runtime reads models, topology, canonical face, chart and atlas from
``guidance/data/`` (carried by the wheel) and checks each against
``guidance/data/MANIFEST.json``. The scripts here are the source and the
provenance of those files; they write them there and record them with this.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "guidance" / "data"
MODELS = DATA / "models"  # ONNX models and what they need (topology, canonical face, licence)
ZONES = DATA / "zones"  # face chart and zone atlas
MANIFEST = DATA / "MANIFEST.json"


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_manifest() -> dict:
    return json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}


def write_manifest(manifest: dict) -> None:
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")


def register(kind: str, name: str, path: Path, **provenance) -> dict:
    """Record `path` (inside guidance/data) under manifest section `kind` with its sha256 and provenance."""
    manifest = read_manifest()
    entry = {"file": Path(path).resolve().relative_to(DATA.resolve()).as_posix(), "sha256": sha256(path), **provenance}
    manifest.setdefault(kind, {})[name] = entry
    write_manifest(manifest)
    return entry
