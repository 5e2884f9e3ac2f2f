"""Where fleet review finds recordings: folder trees on disk, or fsspec URLs (file://, and object stores).

A recording is a folder with an `info.json` and a `frames.jsonl`
(docs/recording.md; the writer creates both when it starts, and a `guidance
simulate` folder has only the first); every such folder under the given roots
is one recording (a recording's own folder is not
searched further). A root may be a path or an fsspec URL:

- a path or a `file://` URL is read in place, by every worker, at the same path
  (a shared file system when the workers are other machines);
- any other URL (`s3://bucket/prefix`, `gcs://…`, `memory://…`) is listed with
  fsspec on the client, and each worker copies one recording at a time into a
  temporary folder of its own before reading it (the reader reads local
  files). The protocol's fsspec implementation (`s3fs`, `gcsfs`, …) and its
  credentials must be on every worker; guidance adds none of them.

Each recording gets a stable `key` (its path under the root and a short hash
of its full location), which names its result file in the output folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from guidance.errors import UserError

INFO, FRAMES = "info.json", "frames.jsonl"


@dataclass(frozen=True)
class RecordingRef:
    """One recording: where it is (`location`: a local folder, or a URL) and its key in the output folder."""

    location: str
    key: str

    @property
    def remote(self) -> bool:
        return _is_url(self.location)


def _is_url(s: str) -> bool:
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", s) is not None


def _local_path(root: str) -> Path | None:
    """The folder a path or file:// URL names; None for any other URL."""
    if not _is_url(root):
        return Path(root)
    if root.startswith("file://"):
        import fsspec.core

        _, path = fsspec.core.url_to_fs(root)
        return Path(path)
    return None


def _key(rel: str, location: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", rel.strip("/")).strip("._") or "recording"
    return f"{name[-80:]}-{hashlib.sha1(location.encode()).hexdigest()[:8]}"


def find_recordings(roots: list[str], *, exclude: Path | None = None) -> list[RecordingRef]:
    """Every recording folder under `roots` (paths or URLs), sorted by location, each once.

    `exclude`: a folder never searched (the fleet's own output folder, whose recordings are results)."""
    if not roots:
        raise UserError("give at least one recording folder, folder tree or URL", field="RECORDINGS")
    found: dict[str, RecordingRef] = {}
    skip = exclude.resolve() if exclude is not None else None
    for root in roots:
        local = _local_path(root)
        if local is not None:
            refs = _find_local(local, skip)
        else:
            refs = _find_remote(root)
        if not refs:
            raise UserError("no recording (a folder with info.json and frames.jsonl) found here", path=root)
        for r in refs:
            found.setdefault(r.location, r)
    return sorted(found.values(), key=lambda r: r.location)


def _find_local(root: Path, skip: Path | None) -> list[RecordingRef]:
    if not root.is_dir():
        raise UserError("folder not found", path=root)
    base = root.resolve()
    out = []
    for d, dirs, files in os.walk(base):
        here = Path(d)
        if skip is not None and (here == skip or skip in here.parents):
            dirs[:] = []
            continue
        if INFO in files and FRAMES in files:
            dirs[:] = []  # a recording's own folder holds no other recording
            rel = base.name if here == base else str(here.relative_to(base))
            out.append(RecordingRef(str(here), _key(rel, str(here))))
        else:
            dirs.sort()
    return out


def _find_remote(root: str) -> list[RecordingRef]:
    try:
        import fsspec.core
    except ImportError:  # pragma: no cover - fsspec comes with the fleet extra
        raise UserError("reading URLs needs fsspec: pip install 'guidance[fleet]'", path=root) from None
    try:
        fs, path = fsspec.core.url_to_fs(root)
        files = fs.find(path)
    except (ImportError, ValueError) as exc:
        raise UserError(f"cannot list this URL ({exc})", path=root) from None
    except OSError as exc:
        raise UserError(f"cannot list this URL ({type(exc).__name__}: {exc})", path=root) from None
    base = path.rstrip("/")
    names: dict[str, set[str]] = {}
    for f in files:
        d, _, name = f.rpartition("/")
        names.setdefault(d, set()).add(name)
    dirs = sorted(d for d, n in names.items() if {INFO, FRAMES} <= n)
    out = []
    for d in dirs:
        if any(d.startswith(o + "/") for o in dirs if o != d):
            continue  # inside another recording
        location = fs.unstrip_protocol(d)
        rel = d[len(base):].strip("/") or base.rsplit("/", 1)[-1]
        out.append(RecordingRef(location, _key(rel, location)))
    return out


@contextlib.contextmanager
def local_copy(ref: RecordingRef) -> Iterator[Path]:
    """The recording as a local folder: itself, or (a URL) a temporary copy removed afterwards."""
    local = _local_path(ref.location)
    if local is not None:
        yield local
        return
    import fsspec.core

    fs, path = fsspec.core.url_to_fs(ref.location)
    with tempfile.TemporaryDirectory(prefix="guidance-fleet-") as tmp:
        dest = Path(tmp) / "recording"
        dest.mkdir()
        try:
            for f in fs.find(path):
                rel = f[len(path.rstrip("/")):].lstrip("/")
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(f, str(target))
        except OSError as exc:
            raise UserError(f"cannot copy the recording ({type(exc).__name__}: {exc})", path=ref.location) from None
        yield dest
