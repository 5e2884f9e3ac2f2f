"""`guidance atlas -o atlas.png [--body AREA]`: draw the face chart (or a body area's patch chart) with every zone
labelled, or list the zones."""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2

from guidance.errors import UserError
from guidance.zones.atlas import load_atlas
from guidance.zones.atlas_render import render_atlas
from guidance.zones.chart import load_chart


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("atlas", help="draw the zone atlas on the face chart",
                       description="Draws the chart (u right, v down, mm; the client's right on the left) with "
                                   "every zone coloured and labelled; exclusions in red.")
    p.add_argument("-o", "--output", help="output image (.png)")
    p.add_argument("--list", action="store_true", help="print the zones (name, kind, surface, clinical name)")
    p.add_argument("--px-per-mm", type=float, default=2.0, help="picture scale (default 2)")
    p.add_argument("--body", metavar="AREA", help="a body area's patch chart instead of the face (abdomen, flank, "
                                                  "thigh; docs/body.md)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    area = None
    if args.body:
        from guidance.zones.body_atlas import body_area_names, load_body_area
        if args.body not in body_area_names():
            raise UserError(f"unknown body area (known: {', '.join(body_area_names())})", field="--body")
        area = load_body_area(args.body)
    atlas = area.atlas if area is not None else load_atlas()
    if args.list or not args.output:
        print(f"atlas {atlas.name} {atlas.atlas_version} ({len(atlas.zones)} zones)")
        if area is not None:
            print(f"  {area.clinical_name}: {area.placement}; plane trusted within {area.range_mm[0]:g} x "
                  f"{area.range_mm[1]:g} mm (u x v semi-axes), skin radius at least {area.curvature_radius_mm[0]:g} "
                  f"mm across, {area.curvature_radius_mm[1]:g} mm along")
        for z in atlas.zones.values():
            print(f"  {z.name:<24} {z.kind:<9} {z.surface:<11} {z.clinical_name}")
    if args.output:
        out = Path(args.output)
        if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            raise UserError("output must be .png or .jpg", path=out, field="--output")
        if not (0.5 <= args.px_per_mm <= 10):
            raise UserError("must be between 0.5 and 10", field="--px-per-mm")
        if out.parent and not out.parent.exists():
            raise UserError("directory does not exist", path=out.parent)
        img = render_atlas(atlas, None if area is not None else load_chart(), px_per_mm=args.px_per_mm)
        tmp = out.with_name(f".{out.name}.part{out.suffix}")
        if not cv2.imwrite(str(tmp), img):
            raise UserError("could not write image", path=out)
        tmp.replace(out)
        print(f"{out}: {img.shape[1]}x{img.shape[0]} px, {len(atlas.zones)} zones")
    return 0
