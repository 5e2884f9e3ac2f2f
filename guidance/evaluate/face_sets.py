"""Which faces train and which evaluate: the one list (guidance/data/face_sets.yaml), read and checked.

`train` names every face any model or threshold was tuned on; `evaluate` the
faces nothing was tuned on, which `guidance evaluate` runs on by default.
A face in both lists, a name that is not a pinned sample, or an evaluation
face that a bundled model's manifest entry lists among its training sources
is said out loud: the last is `training_overlap`, which the evaluation prints
and records with its figures (the file states the agreed target state, the
manifest what the bundled model was really trained on).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from guidance import samples
from guidance.errors import UserError
from guidance.resources import read_manifest, verified_path
from guidance.yamlfile import read_yaml, validate

FACE_SETS_VERSION = 1
_ENTRY = {
    "type": "object",
    "required": ["name", "kind"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "kind": {"enum": ["video", "photo"]},
        "person": {"type": "string"},
        "used_for": {"type": "string"},
        "licence": {"type": "string"},
    },
    "additionalProperties": False,
}
SCHEMA = {
    "type": "object",
    "required": ["face_sets_version", "train", "evaluate"],
    "properties": {
        "face_sets_version": {"const": FACE_SETS_VERSION},
        "train": {"type": "array", "items": _ENTRY},
        "evaluate": {"type": "array", "minItems": 1, "items": _ENTRY},
    },
    "additionalProperties": False,
}
# Manifest fields that list what a model was tuned on (models.<name>.<field>).
TRAINING_FIELDS = ("train_sources", "nonface_sources")


@dataclass(frozen=True)
class Face:
    name: str
    kind: str
    person: str = ""
    used_for: str = ""
    licence: str = ""


@dataclass(frozen=True)
class FaceSets:
    train: tuple[Face, ...]
    evaluate: tuple[Face, ...]
    source: str

    @property
    def evaluation_videos(self) -> list[str]:
        return [f.name for f in self.evaluate if f.kind == "video"]

    def role(self, name: str) -> str | None:
        """"train", "evaluate" or None (a face the list does not know, e.g. a user's own video)."""
        base = Path(name).name
        if any(f.name == base for f in self.train):
            return "train"
        if any(f.name == base for f in self.evaluate):
            return "evaluate"
        return None


def load_face_sets(path: str | Path | None = None) -> FaceSets:
    """The bundled face sets (checked against the manifest), or the file given."""
    p = Path(path) if path else verified_path("face_sets", kind="face_sets")
    data = read_yaml(p, "face sets file")
    validate(data, SCHEMA, p)
    sets = {}
    for key in ("train", "evaluate"):
        faces = []
        for i, e in enumerate(data[key]):
            if e["name"] not in samples.MEMBERS:
                raise UserError(f"{e['name']!r} is not a pinned sample (guidance/samples.py)", path=p,
                                field=f"{key}.{i}.name")
            faces.append(Face(**e))
        sets[key] = tuple(faces)
    both = {f.name for f in sets["train"]} & {f.name for f in sets["evaluate"]}
    if both:
        raise UserError(f"{sorted(both)[0]!r} is listed to train and to evaluate", path=p, field="evaluate")
    return FaceSets(sets["train"], sets["evaluate"], str(p))


def training_overlap(faces: list[str], manifest: dict | None = None) -> list[dict[str, str]]:
    """Faces among `faces` that a bundled model lists among what it was trained on (MANIFEST.json)."""
    manifest = manifest if manifest is not None else read_manifest()
    out = []
    names = {Path(f).name for f in faces}
    for model, entry in sorted((manifest.get("models") or {}).items()):
        if not isinstance(entry, dict):
            continue
        for fld in TRAINING_FIELDS:
            for src in entry.get(fld) or []:
                if src in names:
                    out.append({"face": src, "model": model, "field": fld})
    return out
