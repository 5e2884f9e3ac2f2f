"""Everything the runtime reads that is not code, carried inside the package and checked before use.

The files live under ``guidance/data/`` and travel with the wheel: models,
face-mesh topology, canonical face, face chart, zone atlas, default handpiece
and head-band profiles, example plans and simulation paths. One manifest,
``guidance/data/MANIFEST.json``, holds the sha256 of every one of them (and,
for the models, their provenance; see models/README.md). A file that was
swapped, truncated or corrupted must never shape a decision about a client's
face, so every load recomputes its sha256 and compares it with the manifest.

Where a file came from is told by the scripts in the repository's ``models/``
folder, which write both the files here and their manifest entries.

``$GUIDANCE_DATA`` points the runtime at another folder of the same layout
(tests use it to check that a tampered copy is refused).
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources as _ir
from pathlib import Path

from guidance.errors import ModelIntegrityError, UserError

MANIFEST = "MANIFEST.json"
# Manifest sections and the folder (under the data directory) their files live in.
SECTIONS = {
    "models": "models",  # ONNX models
    "data": "models",  # what the models need: topology, canonical face, licence
    "zones": "zones",  # face chart and zone atlas
    "profiles": "calibration",  # default handpiece and head-band profiles
    "plans": "plans",  # example treatment plans
    "paths": "paths",  # simulation paths
    "face_sets": ".",  # which faces train and which evaluate (face_sets.yaml)
}


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_dir() -> Path:
    """`$GUIDANCE_DATA`, else the package's own `data/` folder (inside site-packages for a wheel)."""
    env = os.environ.get("GUIDANCE_DATA")
    if env:
        return Path(env)
    return Path(str(_ir.files("guidance").joinpath("data")))


def read_manifest(directory: Path | None = None) -> dict:
    directory = Path(directory) if directory else data_dir()
    path = directory / MANIFEST
    if not path.exists():
        raise ModelIntegrityError("manifest missing (reinstall guidance, or run models/build.py in a checkout)", path=path)
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelIntegrityError(f"not valid JSON ({type(exc).__name__})", path=path) from None
    if not isinstance(manifest, dict):
        raise ModelIntegrityError("not a manifest (expected a JSON object)", path=path)
    return manifest


def verified_path(name: str, directory: Path | None = None, *, kind: str = "models") -> Path:
    """Path to a bundled file whose sha256 matches the manifest entry `kind`/`name`."""
    directory = Path(directory) if directory else data_dir()
    manifest = read_manifest(directory)
    entry = (manifest.get(kind) or {}).get(name)
    if not isinstance(entry, dict) or "file" not in entry or "sha256" not in entry:
        raise ModelIntegrityError(f"not listed in the manifest under '{kind}'", path=directory / MANIFEST, field=name)
    path = directory / entry["file"]
    if not path.is_file():
        raise ModelIntegrityError("file missing", path=path)
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise ModelIntegrityError(f"sha256 mismatch (expected {entry['sha256'][:12]}…, got {digest[:12]}…): altered or corrupt",
                                  path=path)
    return path


def bundled_names(kind: str, directory: Path | None = None) -> list[str]:
    """Names of the bundled files of one manifest section (e.g. the example plans)."""
    return sorted((read_manifest(directory).get(kind) or {}).keys())


def is_file(path: str | Path) -> bool:
    """Path.is_file() that answers False, not an exception, for a name the OS cannot look up (too long, NUL)."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def exists(path: str | Path) -> bool:
    try:
        return Path(path).exists()
    except (OSError, ValueError):
        return False


def expand_user(name: str) -> Path:
    """`~/plans/x.yaml` made absolute; a `~user` that does not exist stays as written (and is then not found)."""
    try:
        return Path(name).expanduser()
    except RuntimeError:
        return Path(name)


def user_or_bundled(arg: str | Path, kind: str, *, what: str) -> Path:
    """A user's file if `arg` names one; else a bundled file of that name (``full_face`` or ``full_face.yaml``).

    A plan, path or profile name without a folder finds the example that ships with the package, so a
    wheel installed anywhere can run `guidance plan check full_face` or `guidance demo` without a checkout.
    """
    p = Path(arg)
    if exists(p):
        return p
    name = p.name[:-5] if p.name.endswith(".yaml") else p.name
    if len(p.parts) == 1 and name in (read_manifest().get(kind) or {}):
        return verified_path(name, kind=kind)
    known = ", ".join(bundled_names(kind)) or "none"
    raise UserError(f"{what} not found (bundled {kind}: {known})", path=p)


def check_if_bundled(path: str | Path) -> None:
    """If `path` lies in the bundled data folder, it must be a manifest file with a matching sha256.

    Plans name their handpiece profile by a path relative to the plan, and paths name their plan the same
    way; a bundled plan therefore reaches a bundled profile by path, not by name, and is checked here.
    """
    try:
        rel = Path(path).resolve().relative_to(data_dir().resolve())
    except (ValueError, OSError):
        return
    for kind, entries in read_manifest().items():
        if kind in SECTIONS and isinstance(entries, dict):
            for name, entry in entries.items():
                if isinstance(entry, dict) and entry.get("file") == rel.as_posix():
                    verified_path(name, kind=kind)
                    return
    raise ModelIntegrityError("a file in the bundled data folder that the manifest does not list", path=path)
