"""Build the body atlas: treatment zones around the skin reference patch, one patch chart per body area.

The skin reference patch (guidance/vision/handpiece/designs.py, PatchDesign) is a
rigid card stuck on the skin; its plane stands for the skin near it. Each body
area says where the patch goes (an anatomical landmark), how curved that skin
is at least (the smallest radius of curvature across the body, u, and along it,
v: what the mapping's uncertainty is computed from), and how far from the
patch the plane is trusted (`range_mm`, the semi-axes of an ellipse centred on
the patch). Inside that ellipse the skin is split into zones; the patch card is
an exclusion with a clinical buffer (the electrode must not touch it).

Chart: millimetres in the patch's plane, origin at the card's centre, u to the
right of the printed card (the client's left when the client faces the camera),
v down the card (towards the feet: the printed arrow points to the head).

Where the plane holds: on skin curved with radius R (a cylinder across the body),
a point d from the patch lies s = d^2 / (2R) behind the patch plane. The camera
ray through it meets the plane s * tan(a) short of it (a: the ray's angle from
the plane normal), and the plane's chord is shorter than the skin's arc by about
d^3 / (6 R^2). With the camera 450 mm in front of the patch (tan a = d / 450),
the sum stays under ~3.3 mm inside the ranges below; the live mapping computes it
with the frame's own angle (guidance/zones/body_mapper.py). docs/body.md.

    python models/build_body_atlas.py     # writes guidance/data/zones/body_atlas.json, updates the manifest
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from guidance.vision.handpiece.designs import PatchDesign

import bundle  # models/bundle.py, beside this script

ATLAS_VERSION = "1.0"
CHART_VERSION = "patch-1.0"
CELL_MM = 0.5
U0, V0, W, H = -100.0, -150.0, 401, 601  # grid: u -100..100, v -150..150 mm
PATCH_BUFFER_MM = 5.0  # the electrode's radius (10 mm default): its footprint stays off the card

# name: (clinical name, where the patch goes, smallest radius of curvature (across u, along v) mm,
#        range semi-axes (u, v) mm, zones: [(name, clinical name, u sign or 0, v sign or 0)])
AREAS = {
    "abdomen": (
        "Abdomen (around the navel)",
        "card centred on the navel (it covers the umbilicus), long side along the body, arrow to the head",
        (225.0, 350.0), (70.0, 90.0),
        [("abdomen_upper_right", "Abdomen, upper right", -1, -1), ("abdomen_upper_left", "Abdomen, upper left", 1, -1),
         ("abdomen_lower_right", "Abdomen, lower right", -1, 1), ("abdomen_lower_left", "Abdomen, lower left", 1, 1)]),
    "flank": (
        "Flank (love handle), one side",
        "card on the mid-axillary line at the waist (narrowest point), arrow to the armpit",
        (90.0, 350.0), (45.0, 90.0),
        [("flank_upper", "Flank, above the waist", 0, -1), ("flank_lower", "Flank, below the waist", 0, 1)]),
    "thigh": (
        "Thigh, front-lateral (cellulite), one side",
        "card midway from the greater trochanter to the knee, on the front-lateral line, arrow to the hip",
        (80.0, 1000.0), (42.0, 130.0),
        [("thigh_upper", "Thigh, upper half", 0, -1), ("thigh_lower", "Thigh, lower half", 0, 1)]),
    # The décolletage on the torso, not on the head: a card on the sternum moves with the chest, so a head turn
    # (which swings a head-carried décolletage) does not move these zones. The card's top edge 30 mm below the
    # suprasternal notch puts its centre 77 mm below it; the range's upper end (75 mm) stops 2 mm below the
    # notch (the neck is above), its lower end about 150 mm below the notch (the 4th rib), its sides 65 mm
    # either side of the midline (the mid-clavicular lines of a small chest).
    "decolletage": (
        "Décolletage (upper chest), on the sternum",
        "card on the sternum, long side along it, top edge 30 mm (two finger-widths) below the suprasternal notch, "
        "arrow to the head",
        (200.0, 300.0), (65.0, 75.0),
        [("decolletage_upper_right", "Décolletage, upper right", -1, -1),
         ("decolletage_upper_left", "Décolletage, upper left", 1, -1),
         ("decolletage_lower_right", "Décolletage, lower right", -1, 1),
         ("decolletage_lower_left", "Décolletage, lower left", 1, 1)]),
}


def write_json_atomic(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, separators=(",", ":"))
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _grid_centres() -> tuple[np.ndarray, np.ndarray]:
    u = U0 + np.arange(W) * CELL_MM
    v = V0 + np.arange(H) * CELL_MM
    return np.meshgrid(u, v)


def _rings(mask: np.ndarray) -> list:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [(c.reshape(-1, 2) * CELL_MM + [U0, V0]).round(3).tolist() for c in contours]


def build_area(name: str, spec: tuple, design: PatchDesign) -> dict:
    clinical, placement, radius, rng, zone_specs = spec
    uu, vv = _grid_centres()
    half_w, half_h = design.size_mm[0] / 2, design.size_mm[1] / 2
    card = (np.abs(uu) <= half_w) & (np.abs(vv) <= half_h)
    inside = (uu / rng[0]) ** 2 + (vv / rng[1]) ** 2 <= 1.0
    zones = [{"name": "patch", "clinical_name": "Reference patch (card)", "kind": "exclusion", "surface": "body",
              "buffer_mm": PATCH_BUFFER_MM, "boundary_mm": _rings(card)}]
    claimed = card.copy()
    for zname, zclinical, su, sv in zone_specs:
        m = inside & ~card
        if su:
            m &= (uu < 0) if su < 0 else (uu >= 0)
        if sv:
            m &= (vv < 0) if sv < 0 else (vv >= 0)
        assert not (m & claimed).any(), zname
        claimed |= m
        zones.append({"name": zname, "clinical_name": zclinical, "kind": "treat", "surface": "body",
                      "boundary_mm": _rings(m)})
    return {"clinical_name": clinical, "placement": placement,
            "curvature_radius_mm": list(radius), "range_mm": list(rng),
            "atlas_version": ATLAS_VERSION, "chart_version": CHART_VERSION,
            "grid": {"cell_mm": CELL_MM, "u0_mm": U0, "v0_mm": V0, "width": W, "height": H},
            "zones": zones}


def build(out_dir: Path = bundle.ZONES) -> dict:
    design = PatchDesign()
    atlas = {
        "atlas_version": ATLAS_VERSION,
        "chart_version": CHART_VERSION,
        "made_by": "models/build_body_atlas.py",
        "description": "Body areas on the skin reference patch's chart (u right on the printed card, v down it, mm, "
                       "origin at the card's centre). Per area: where the card goes, the smallest radius of "
                       "curvature across (u) and along (v) the body, the ellipse (semi-axes range_mm) where the "
                       "patch plane stands for the skin, and the zones inside it. Zones do not overlap.",
        "patch": {"name": design.name, "ids": list(design.ids), "size_mm": list(design.size_mm),
                  "marker_mm": design.marker_mm, "pitch_mm": design.pitch_mm},
        "areas": {name: build_area(name, spec, design) for name, spec in AREAS.items()},
    }
    path = Path(out_dir) / "body_atlas.json"
    write_json_atomic(path, atlas)
    if Path(out_dir).resolve() == bundle.ZONES.resolve():
        bundle.register("zones", "body_atlas", path, source="models/build_body_atlas.py")
    return {k: [z["name"] for z in a["zones"]] for k, a in atlas["areas"].items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=bundle.ZONES)
    args = ap.parse_args(argv)
    print(build(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
