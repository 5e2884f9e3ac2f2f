"""Build the face chart and the zone atlas (data files under guidance/zones/data/).

Run once, commit the outputs: ``python models/build_chart.py``.

Why a script and not code at run time: the chart and the atlas are what a
clinician signs off on. They must not change because a library was upgraded,
so they are produced here, versioned, and only *read* by the service.

Inputs (all in ``models/``): the canonical face (468 vertices in mm, head
frame) and the mediapipe face-mesh topology (edge sets only).

Outputs:
- ``face_chart.json``: mesh triangles derived from the tesselation edges,
  per-vertex chart coordinates (u, v) in mm from a cylindrical unwrap, the
  per-triangle metric of the unwrap, and the neck / décolletage / scalp
  surfaces carried by the head pose.
- ``atlas.json``: named zones (clinical name, kind, surface) as boundary
  polygons in chart mm, plus the raster grid they were made on, so the
  run-time rasterisation is exact and zones cannot overlap.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from guidance.vision.face.head_pose import load_canonical_face
from guidance.vision.models import load_topology

import bundle  # models/bundle.py, beside this script

DATA_DIR = bundle.ZONES
# 1.1: exclusion buffers (zone geometry as in 1.0). 1.2: the neck split at the sternocleidomastoid's anterior border
# and the décolletage drawn from the notch, clavicles, deltopectoral grooves and the 4th costal level (they were
# rectangles); the chart, its grid and every face and scalp zone as in 1.1.
ATLAS_VERSION = "1.2.0"
# Clinical buffer (skin mm) each exclusion keeps beyond its own edge, independent of a plan's margin: the gate
# requires the tip's look-ahead distance *plus* this from the exclusion. The periorbital zones already reach the
# orbital rim; 3 mm more keeps the electrode's field off the lids and the rim's thin skin. The lips' zone is the
# vermilion; 2 mm keeps the footprint off the vermilion border. Defaults for a clinician to sign off.
EXCLUSION_BUFFER_MM = {"periorbital_right": 3.0, "periorbital_left": 3.0, "lips": 2.0}
CHART_VERSION = "1.0.0"

# Raster the atlas is designed on (chart mm). 0.5 mm cells: boundaries are
# exact to a quarter of a millimetre, and the label image stays ~1 M cells.
CELL_MM = 0.5
U_RANGE_MM = (-200.0, 200.0)
V_RANGE_MM = (-230.0, 400.0)

# Anatomical spans used where no landmark exists (documented in docs/zones.md).
INFRAORBITAL_DROP_MM = 9.0  # lower lid margin → infraorbital rim
LATERAL_ORBIT_MM = 9.0  # outer canthus → lateral orbital rim
MEDIAL_ORBIT_MM = 4.0
FOREHEAD_ON_CAP_MM = 15.0  # the mesh stops below the hairline: forehead continues onto the cap
FRONTAL_HAIRLINE_MM = 25.0
JAWLINE_BAND_MM = 12.0
NECK_LENGTH_MM = 100.0  # menton → suprasternal notch, proportional extension
DECOLLETAGE_LENGTH_MM = 150.0  # suprasternal notch → shoulder/bust line, proportional extension
NECK_HALF_MM = 75.0  # arc either side of the midline: the front and sides of the neck, to the trapezius' edge
# The anterior triangle of the neck (neck_anterior) ends laterally at the sternocleidomastoid's anterior border: from
# its sternal head beside the notch up and out to below the angle of the mandible. Chart half-widths (arc mm) at the
# notch and at the menton's level; the border is straight between them and carried on up to the mandible.
SCM_HALF_AT_NOTCH_MM = 12.0
SCM_HALF_AT_MENTON_MM = 50.0
# The décolletage (on the plane below the notch; u = x, v = y - notch): its top edge is the clavicles' upper border,
# level with the notch in this chart (their medial two thirds lie within a few mm of it; the lateral third's rise
# towards the acromion is not charted); it ends laterally at the deltopectoral groove, which leaves the clavicle at
# the junction of its middle and lateral thirds (SC joint ~20 mm from the midline + 2/3 of a ~150 mm clavicle), and
# runs down and slightly in to the anterior axillary fold; its lower edge is the V of a neckline, from the upper
# pole of the breast at the fold (~75 mm below the clavicle) to the sternum at the 4th costal cartilage (~130 mm
# below the notch). Adult proportions; the sternal notch touch moves the whole shape to the client's notch.
DELTOPECTORAL_TOP_HALF_MM = 120.0
DELTOPECTORAL_BOTTOM_HALF_MM = 110.0
DECOLLETAGE_FOLD_DROP_MM = 75.0
DECOLLETAGE_STERNAL_DROP_MM = 130.0
SCALP_TEMPORAL_U_MM = 45.0


# ---------------------------------------------------------------- mesh ----

def mesh_triangles(vertices_mm: np.ndarray, edges: list[list[int]]) -> np.ndarray:
    """Triangles of the mesh from its edge set: the 3-cycles that are faces.

    Every 3-cycle of the edge graph is a candidate. In a triangulated surface
    an edge borders at most two faces; a 3-cycle that is not a face encloses a
    vertex, and then each of its three edges is used by three candidates. Those
    candidates are dropped. Triangles are then oriented consistently across
    shared edges (each interior edge traversed once each way), with normals
    towards the camera for a frontal face (-z in the head frame).
    """
    und = {tuple(sorted(map(int, e))) for e in edges}
    adj: dict[int, set[int]] = {i: set() for i in range(len(vertices_mm))}
    for a, b in und:
        adj[a].add(b)
        adj[b].add(a)
    cands = sorted({tuple(sorted((a, b, c))) for a, b in und for c in adj[a] & adj[b]})

    def edge_use(tris):
        use: dict[tuple[int, int], list[int]] = {}
        for k, t in enumerate(tris):
            for i in range(3):
                use.setdefault(tuple(sorted((t[i], t[(i + 1) % 3]))), []).append(k)
        return use

    use = edge_use(cands)
    tris = [t for t in cands
            if not all(len(use[tuple(sorted((t[i], t[(i + 1) % 3])))]) > 2 for i in range(3))]
    use = edge_use(tris)
    if any(len(ks) > 2 for ks in use.values()):
        raise RuntimeError("edge set is not a surface: an edge borders more than two triangles")
    # consistent orientation by propagation over shared edges
    tri = [list(t) for t in tris]
    oriented = [False] * len(tri)
    for seed in range(len(tri)):
        if oriented[seed]:
            continue
        oriented[seed] = True
        stack = [seed]
        while stack:
            k = stack.pop()
            t = tri[k]
            for i in range(3):
                a, b = t[i], t[(i + 1) % 3]
                for j in use[tuple(sorted((a, b)))]:
                    if j == k or oriented[j]:
                        continue
                    s = tri[j]
                    # neighbour must traverse the shared edge as b→a
                    if any(s[m] == a and s[(m + 1) % 3] == b for m in range(3)):
                        tri[j] = [s[0], s[2], s[1]]
                    oriented[j] = True
                    stack.append(j)
    tri = np.array(tri, dtype=np.int64)
    p = vertices_mm[tri]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    area = np.linalg.norm(n, axis=1)
    if (n[:, 2] * area).sum() > 0:  # normals must point to -z (towards the camera) on the whole
        tri = tri[:, [0, 2, 1]]
    return tri


def boundary_loops(tri: np.ndarray) -> list[list[int]]:
    """Closed loops of edges that border exactly one triangle (face contour, eyes, mouth)."""
    directed = {(int(t[i]), int(t[(i + 1) % 3])) for t in tri for i in range(3)}
    border = {a: b for a, b in directed if (b, a) not in directed}
    loops, seen = [], set()
    for start in sorted(border):
        if start in seen:
            continue
        loop, cur = [], start
        while cur not in seen:
            seen.add(cur)
            loop.append(cur)
            cur = border[cur]
        loops.append(loop)
    return loops


def fill_holes(vertices_mm: np.ndarray, tri: np.ndarray, uv: np.ndarray, outer_vertex: int = 10) -> np.ndarray:
    """Close the eye and mouth openings by ear clipping in the chart.

    The mesh has holes at the palpebral fissures and between the lips; a
    point on a closed eyelid, the eye or the mouth opening must still map to
    a zone (periorbital / lips: exclusions), never fall through to "no skin".
    """
    added = []
    for loop in boundary_loops(tri):
        if outer_vertex in loop:
            continue
        # the hole is traversed opposite to the surrounding triangles; clip ears in the chart
        poly = list(loop)
        guard = 0
        while len(poly) > 3 and guard < 10_000:
            guard += 1
            n = len(poly)
            area = sum(cross2(uv[poly[i]], uv[poly[(i + 1) % n]]) for i in range(n))
            best, best_q = None, -np.inf
            for i in range(n):
                a, b, c = poly[i - 1], poly[i], poly[(i + 1) % n]
                turn = cross2(uv[b] - uv[a], uv[c] - uv[b])
                if turn * area <= 0:
                    continue  # reflex vertex
                others = [uv[k] for k in poly if k not in (a, b, c)]
                m = np.array([uv[b] - uv[a], uv[c] - uv[a]]).T
                if abs(np.linalg.det(m)) < 1e-12:
                    continue
                inside = False
                for q in others:
                    lam = np.linalg.solve(m, q - uv[a])
                    if lam[0] > 0 and lam[1] > 0 and lam.sum() < 1:
                        inside = True
                        break
                if inside:
                    continue
                # prefer well-shaped ears (largest smallest angle proxy: area / longest edge^2)
                longest = max(np.linalg.norm(uv[b] - uv[a]), np.linalg.norm(uv[c] - uv[b]), np.linalg.norm(uv[a] - uv[c]))
                q = abs(turn) / longest ** 2
                if q > best_q:
                    best, best_q = i, q
            if best is None:
                best = 0  # degenerate (coincident lips): clip anyway
            a, b, c = poly[best - 1], poly[best], poly[(best + 1) % len(poly)]
            added.append([a, b, c])
            poly.pop(best)
        added.append(poly)
    if not added:
        return tri
    fill = np.array(added, dtype=np.int64)
    p = vertices_mm[fill]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    flip = n[:, 2] > 0
    fill[flip] = fill[flip][:, [0, 2, 1]]
    return np.vstack([tri, fill])


def cross2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def fit_cylinder_axis(vertices_mm: np.ndarray) -> tuple[float, float, float]:
    """Vertical axis (x0, z0) and radius of the circle best fitting the face in the x-z plane."""
    x, z = vertices_mm[:, 0], vertices_mm[:, 2]
    a = np.c_[x, z, np.ones_like(x)]
    s = np.linalg.lstsq(a, -(x ** 2 + z ** 2), rcond=None)[0]
    x0, z0 = -s[0] / 2, -s[1] / 2
    r = float(np.sqrt(x0 ** 2 + z0 ** 2 - s[2]))
    return float(x0), float(z0), r


def cylinder_uv(points_mm: np.ndarray, x0: float, z0: float, radius_mm: float) -> np.ndarray:
    """u = R·θ (arc length on the fitted cylinder, θ = 0 straight ahead), v = y."""
    theta = np.arctan2(points_mm[:, 0] - x0, z0 - points_mm[:, 2])
    return np.c_[radius_mm * theta, points_mm[:, 1]]


def triangle_metric(vertices_mm: np.ndarray, uv: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Singular values (min, max) of d(skin mm)/d(chart mm) per triangle.

    A chart distance d corresponds to at least sigma_min·d on the skin inside
    that triangle; the mapper uses it to turn chart distances into skin mm.
    """
    out = np.zeros((len(tri), 2))
    for k, t in enumerate(tri):
        duv = np.array([uv[t[1]] - uv[t[0]], uv[t[2]] - uv[t[0]]]).T  # 2x2
        dxyz = np.array([vertices_mm[t[1]] - vertices_mm[t[0]], vertices_mm[t[2]] - vertices_mm[t[0]]]).T  # 3x2
        j = dxyz @ np.linalg.inv(duv)
        s = np.linalg.svd(j, compute_uv=False)
        out[k] = (s.min(), s.max())
    return out


def mirror_index(vertices_mm: np.ndarray) -> np.ndarray:
    """For each vertex, the vertex nearest its mirror image across the mid-sagittal plane."""
    m = vertices_mm * np.array([-1.0, 1.0, 1.0])
    d = np.linalg.norm(vertices_mm[None, :, :] - m[:, None, :], axis=2)
    return np.argmin(d, axis=1)


# --------------------------------------------------------- surfaces ----

def head_surfaces(v: np.ndarray, uv: np.ndarray, axis: tuple[float, float, float]) -> dict:
    """Neck cylinder, décolletage plane and scalp ellipsoid in the head frame (mm).

    Proportional to the canonical face: the scalp ellipsoid passes through the
    top of the face mesh (landmark 10) and the temples; the neck cylinder sits
    below the ears; the décolletage is a plane tangent to the front of the
    neck below the suprasternal notch. No pose model: this is the documented
    proportional extension.
    """
    menton_y = float(v[152, 1])
    # Scalp: axis-aligned ellipsoid, anthropometric proportions (breadth 150,
    # length 190, vertex ~125 mm above the eye line), centre chosen so that
    # the top of the face mesh lies on it.
    ax, ay, az = 75.0, 105.0, 95.0
    cy = -20.0
    top = v[10]
    # solve ((top.y-cy)/ay)^2 + ((top.z-cz)/az)^2 = 1 for cz behind the forehead
    cz = float(top[2] + az * np.sqrt(max(1e-6, 1 - ((top[1] - cy) / ay) ** 2)))
    r_meridian = (ay + az) / 2
    phi_top = float(np.arcsin(-(top[1] - cy) / ay))
    neck_radius = 55.0
    neck_z0 = 70.0
    sternal_y = menton_y + NECK_LENGTH_MM
    return {
        "scalp": {"centre_mm": [0.0, cy, cz], "semi_axes_mm": [ax, ay, az],
                  "meridian_radius_mm": r_meridian, "equator_radius_mm": axis[2],
                  "v_offset_mm": float(uv[10, 1] + r_meridian * phi_top), "v_top_mm": float(uv[10, 1])},
        "neck": {"axis_x_mm": 0.0, "axis_z_mm": neck_z0, "radius_mm": neck_radius,
                 "y_top_mm": float(v[:, 1].max() - 40.0), "y_bottom_mm": sternal_y},
        "decolletage": {"plane_z_mm": neck_z0 - neck_radius, "y_top_mm": sternal_y,
                        "y_bottom_mm": sternal_y + DECOLLETAGE_LENGTH_MM},
    }


# ------------------------------------------------------------ atlas ----

class Grid:
    def __init__(self) -> None:
        self.cell = CELL_MM
        self.u0, self.v0 = U_RANGE_MM[0], V_RANGE_MM[0]
        self.w = int(round((U_RANGE_MM[1] - U_RANGE_MM[0]) / CELL_MM))
        self.h = int(round((V_RANGE_MM[1] - V_RANGE_MM[0]) / CELL_MM))
        jj, ii = np.meshgrid(np.arange(self.w), np.arange(self.h))
        self.u = self.u0 + jj * self.cell
        self.v = self.v0 + ii * self.cell

    def px(self, uv: np.ndarray) -> np.ndarray:
        return np.round((np.asarray(uv) - [self.u0, self.v0]) / self.cell).astype(np.int32)

    def poly(self, uv_points) -> np.ndarray:
        m = np.zeros((self.h, self.w), np.uint8)
        cv2.fillPoly(m, [self.px(np.asarray(uv_points, float)).reshape(-1, 1, 2)], 1)
        return m.astype(bool)

    def hull(self, uv_points) -> np.ndarray:
        pts = self.px(np.asarray(uv_points, float)).reshape(-1, 1, 2)
        m = np.zeros((self.h, self.w), np.uint8)
        cv2.fillConvexPoly(m, cv2.convexHull(pts), 1)
        return m.astype(bool)

    def band(self, a, b, half_width_mm: float) -> np.ndarray:
        """Cells within half_width of the segment a-b (a capsule)."""
        a, b = np.asarray(a, float), np.asarray(b, float)
        d = b - a
        t = np.clip(((self.u - a[0]) * d[0] + (self.v - a[1]) * d[1]) / (d @ d), 0, 1)
        return np.hypot(self.u - a[0] - t * d[0], self.v - a[1] - t * d[1]) <= half_width_mm

    def near_polyline(self, uv_points, dist_mm: float) -> np.ndarray:
        m = np.full((self.h, self.w), 255, np.uint8)
        cv2.polylines(m, [self.px(np.asarray(uv_points, float)).reshape(-1, 1, 2)], False, 0, 1)
        return cv2.distanceTransform(m, cv2.DIST_L2, 5) * self.cell <= dist_mm


def ordered_oval(edges: list[list[int]]) -> list[int]:
    """FACEMESH_FACE_OVAL as one closed loop starting at landmark 10."""
    nxt: dict[int, list[int]] = {}
    for a, b in edges:
        nxt.setdefault(a, []).append(b)
        nxt.setdefault(b, []).append(a)
    loop, prev, cur = [10], None, 10
    while True:
        n = [x for x in nxt[cur] if x != prev]
        # go towards the subject's right (image left) first: deterministic order
        step = n[0] if prev is not None else min(n, key=lambda k: k)
        if step == 10:
            break
        loop.append(step)
        prev, cur = cur, step
    return loop


def interp_curve(points_uv: np.ndarray, u: np.ndarray) -> np.ndarray:
    """v of a polyline (sorted by u) at u, extended flat beyond its ends."""
    o = np.argsort(points_uv[:, 0])
    return np.interp(u, points_uv[o, 0], points_uv[o, 1])


def decolletage_outline(notch_v: float) -> np.ndarray:
    """The décolletage's outline on the chart (u, v mm), clockwise from the notch: the clavicles (level with the
    notch) out to the deltopectoral grooves, down them to the anterior axillary folds, then the V to the sternum."""
    top, bottom = DELTOPECTORAL_TOP_HALF_MM, DELTOPECTORAL_BOTTOM_HALF_MM
    return np.array([[-top, notch_v], [top, notch_v], [bottom, notch_v + DECOLLETAGE_FOLD_DROP_MM],
                     [0.0, notch_v + DECOLLETAGE_STERNAL_DROP_MM], [-bottom, notch_v + DECOLLETAGE_FOLD_DROP_MM]])


def build_atlas(v: np.ndarray, uv: np.ndarray, tri: np.ndarray, surfaces: dict, topo: dict) -> tuple[dict, np.ndarray, list[str], np.ndarray]:
    g = Grid()
    mir = mirror_index(v)
    P = lambda i: uv[i]  # noqa: E731
    oval = ordered_oval(topo["FACEMESH_FACE_OVAL"])
    oval_uv = uv[oval]
    face = g.poly(oval_uv)
    # every triangle of the mesh must be inside the face region
    tri_mask = np.zeros_like(face, np.uint8)
    for t in tri:
        cv2.fillConvexPoly(tri_mask, g.px(uv[t]).reshape(-1, 1, 2), 1)
    face |= tri_mask.astype(bool)

    # upper and lower face contours (as functions of u)
    i_left = int(np.argmin(oval_uv[:, 0]))
    i_right = int(np.argmax(oval_uv[:, 0]))
    ear_v = 0.5 * (oval_uv[i_left, 1] + oval_uv[i_right, 1])
    upper = oval_uv[oval_uv[:, 1] <= ear_v]
    lower = oval_uv[oval_uv[:, 1] > ear_v]
    v_upper = interp_curve(upper, g.u)
    v_lower = interp_curve(lower, g.u)
    u_span = (oval_uv[:, 0].min(), oval_uv[:, 0].max())

    # surfaces in the chart
    sc = surfaces["scalp"]
    v_vertex = sc["v_offset_mm"] - sc["meridian_radius_mm"] * (np.pi / 2)
    scalp = (~face) & (g.v < v_upper) & (g.v >= v_vertex) & (g.u >= u_span[0]) & (g.u <= u_span[1])
    sternal_v = surfaces["neck"]["y_bottom_mm"]
    neck = (~face) & (g.v > v_lower) & (g.v < sternal_v) & (np.abs(g.u) <= NECK_HALF_MM)
    menton_v = float(uv[152, 1])
    scm_half = SCM_HALF_AT_NOTCH_MM + (SCM_HALF_AT_MENTON_MM - SCM_HALF_AT_NOTCH_MM) * (sternal_v - g.v) / (
        sternal_v - menton_v)
    dec = (g.v >= sternal_v) & (g.v < surfaces["decolletage"]["y_bottom_mm"]) & g.poly(decolletage_outline(sternal_v))

    names: list[str] = []
    labels = np.zeros((g.h, g.w), np.uint8)
    meta: dict[str, dict] = {}

    def paint(name: str, mask: np.ndarray, region: np.ndarray, kind: str, surface: str, clinical: str,
              carried_on: tuple[str, ...] = ()) -> None:
        m = mask & region & (labels == 0)
        if name not in names:
            names.append(name)
            meta[name] = {"kind": kind, "surface": surface, "clinical_name": clinical,
                          "carried_on": [surface, *carried_on]}
        labels[m] = names.index(name) + 1

    sides = (("right", 1.0), ("left", -1.0))  # (side, sign of "toward midline" in u)

    def side_idx(i: int, side: str) -> int:
        return i if side == "right" else int(mir[i])

    # 1. lips (vermilion) — exclusion
    outer_lip = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146]
    paint("lips", g.poly(uv[outer_lip]), face, "exclusion", "face", "Lips (vermilion)")

    # 2. periorbital — exclusion: eye and lids up to the orbital rim
    eye_r = sorted({i for e in topo["FACEMESH_RIGHT_EYE"] for i in e})
    brow_lower_r = [46, 53, 52, 65, 55]
    lower_lid_r = [33, 7, 163, 144, 145, 153, 154, 155, 133]
    for side, inward in sides:
        eye = [side_idx(i, side) for i in eye_r]
        pts = list(uv[eye])
        pts += list(uv[[side_idx(i, side) for i in lower_lid_r]] + [0, INFRAORBITAL_DROP_MM])
        pts.append(P(side_idx(33, side)) + [-inward * LATERAL_ORBIT_MM, 0])
        pts.append(P(side_idx(33, side)) + [-inward * LATERAL_ORBIT_MM, INFRAORBITAL_DROP_MM * 0.6])
        pts.append(P(side_idx(133, side)) + [inward * MEDIAL_ORBIT_MM, 0])
        pts += list(uv[[side_idx(i, side) for i in brow_lower_r]])
        paint(f"periorbital_{side}", g.hull(pts), face, "exclusion", "face",
              f"Periorbital {side} (eye, lids, to the orbital rim)")

    # 3. nose
    nose = sorted({i for e in topo["FACEMESH_NOSE"] for i in e} | {129, 358, 49, 279})
    paint("nose", g.hull(uv[nose]), face, "treat", "face", "Nose")

    # 4. upper lip (cutaneous): alar base → mouth corners → vermilion border
    ul = [98, 97, 2, 326, 327, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185, 61]
    ul_pts = uv[ul].copy()
    ul_pts[ul.index(61)] += [-2.0, 0]
    ul_pts[ul.index(291)] += [2.0, 0]
    paint("upper_lip", g.poly(ul_pts), face, "treat", "face", "Upper lip (cutaneous)")

    # 5. nasolabial folds: ala → lateral of the mouth corner
    for side, inward in sides:
        a = P(side_idx(129, side)) + [-inward * 2.0, 2.0]
        b = P(side_idx(61, side)) + [-inward * 7.0, 6.0]
        paint(f"nasolabial_{side}", g.band(a, b, 6.0), face, "treat", "face", f"Nasolabial fold {side}")

    # 6. chin: below the lower lip, between the mouth corners, down to the contour
    mc_r, mc_l = P(61), P(291)
    chin_half = 0.5 * (mc_l[0] - mc_r[0]) - 6.0
    low_lip = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
    chin_mask = (g.v > interp_curve(uv[low_lip], g.u)) & (np.abs(g.u - 0.5 * (mc_l[0] + mc_r[0])) <= chin_half)
    paint("chin", chin_mask, face, "treat", "face", "Chin (mentum)")

    # 7. jawline: band inside the lower face contour, from the mandible angle region to the chin
    jaw_r = [132, 58, 172, 136, 150, 149, 176, 148, 152]
    for side, inward in sides:
        line = uv[[side_idx(i, side) for i in jaw_r]]
        m = g.near_polyline(line, JAWLINE_BAND_MM) & (inward * g.u <= inward * P(152)[0])
        paint(f"jawline_{side}", m, face, "treat", "face", f"Jawline {side} (mandibular border)")

    # 8. marionette: from the mouth corner down towards the jawline
    for side, inward in sides:
        a = P(side_idx(61, side)) + [-inward * 1.0, 3.0]
        b = P(side_idx(149, side)) + [-inward * 4.0, -8.0]
        paint(f"marionette_{side}", g.band(a, b, 7.0), face, "treat", "face", f"Marionette {side}")

    # 9. glabella: between the brow heads, nasal root to above the brows
    top = min(P(107)[1], P(336)[1]) - 4.0
    glab = (g.u >= P(107)[0] + 1.0) & (g.u <= P(336)[0] - 1.0) & (g.v <= P(168)[1]) & (g.v >= top)
    paint("glabella", glab, face, "treat", "face", "Glabella")

    # brow line: forehead is above the brow's lower edge (brows belong to the forehead)
    brow_line = np.vstack([uv[brow_lower_r], uv[[mir[i] for i in brow_lower_r]]])
    v_brow = interp_curve(brow_line, g.u)
    pupil = {s: uv[[side_idx(i, s) for i in eye_r]].mean(0) for s, _ in sides}

    # 10. temples: lateral to the brow tail / temporal line, above the zygomatic arch (canthus level)
    for side, inward in sides:
        tail = P(side_idx(70, side))
        canthus = P(side_idx(33, side))
        m = (inward * g.u < inward * (tail[0] - inward * 2.0)) & (g.v < canthus[1] + 3.0)
        paint(f"temple_{side}", m, face | (scalp & (g.v > v_upper - FOREHEAD_ON_CAP_MM)), "treat", "face",
              f"Temple {side}", ("scalp",))

    # 11. forehead: above the brows, split at the mid-pupillary lines; continues onto the cap
    forehead_region = face | (scalp & (g.v > v_upper - FOREHEAD_ON_CAP_MM))
    above = g.v < v_brow
    paint("forehead_central", above & (g.u > pupil["right"][0]) & (g.u < pupil["left"][0]), forehead_region,
          "treat", "face", "Forehead, central", ("scalp",))
    paint("forehead_right", above & (g.u <= pupil["right"][0]), forehead_region, "treat", "face", "Forehead, right",
          ("scalp",))
    paint("forehead_left", above & (g.u >= pupil["left"][0]), forehead_region, "treat", "face", "Forehead, left",
          ("scalp",))

    # 12. cheeks: the rest of the face by side
    paint("cheek_right", g.u < P(1)[0], face, "treat", "face", "Cheek right")
    paint("cheek_left", g.u >= P(1)[0], face, "treat", "face", "Cheek left")
    # anything left on the face (e.g. thin slivers above the brow line laterally)
    left_over = face & (labels == 0)
    if left_over.any():
        paint("cheek_right", left_over & (g.u < 0), face, "treat", "face", "Cheek right")
        paint("cheek_left", left_over & (g.u >= 0), face, "treat", "face", "Cheek left")

    # neck and décolletage
    paint("neck_anterior", np.abs(g.u) <= scm_half, neck, "treat", "neck", "Neck, anterior (anterior triangle)")
    paint("neck_lateral_right", g.u < 0, neck, "treat", "neck", "Neck, lateral right")
    paint("neck_lateral_left", g.u >= 0, neck, "treat", "neck", "Neck, lateral left")
    paint("decolletage", dec, dec, "treat", "decolletage", "Décolletage")

    # scalp
    hair = scalp & (g.v > v_upper - FOREHEAD_ON_CAP_MM - FRONTAL_HAIRLINE_MM)
    paint("scalp_frontal_hairline", hair & (np.abs(g.u) < SCALP_TEMPORAL_U_MM), scalp, "treat", "scalp",
          "Scalp, frontal hairline")
    paint("scalp_temporal_right", (g.u <= -SCALP_TEMPORAL_U_MM) & (g.v > v_upper - 70.0), scalp, "treat", "scalp",
          "Scalp, temporal right")
    paint("scalp_temporal_left", (g.u >= SCALP_TEMPORAL_U_MM) & (g.v > v_upper - 70.0), scalp, "treat", "scalp",
          "Scalp, temporal left")
    paint("scalp_mid", scalp, scalp, "treat", "scalp", "Mid-scalp")

    labels = clean_labels(labels, min_area_mm2=4.0, cell_mm=g.cell)
    surface_of = np.zeros_like(labels)
    surface_of[face] = 1
    surface_of[scalp] = 3
    surface_of[neck] = 2
    surface_of[dec] = 4
    zones = []
    for k, name in enumerate(names, start=1):
        m = (labels == k).astype(np.uint8)
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        rings = [(c.reshape(-1, 2) * g.cell + [g.u0, g.v0]).round(3).tolist() for c in contours]
        extra = {"buffer_mm": EXCLUSION_BUFFER_MM.get(name, 0.0)} if meta[name]["kind"] == "exclusion" else {}
        zones.append({"name": name, **meta[name], **extra, "boundary_mm": rings})
    grid = {"cell_mm": g.cell, "u0_mm": g.u0, "v0_mm": g.v0, "width": g.w, "height": g.h}
    atlas = {
        "atlas_version": ATLAS_VERSION,
        "chart_version": CHART_VERSION,
        "made_by": "models/build_chart.py",
        "description": "Treatment zones on the face chart (u, v in mm). Sides are the client's: 'right' is the "
                       "client's right (image left for a frontal face, u < 0). boundary_mm: one or more closed "
                       "rings per zone; cells are 'inside' when their centre is inside or on a ring (raster grid "
                       "below). Zones do not overlap.",
        "grid": grid,
        "zones": zones,
    }
    return atlas, labels, names, surface_of


def clean_labels(labels: np.ndarray, *, min_area_mm2: float, cell_mm: float) -> np.ndarray:
    """Give specks (components smaller than min_area) to their nearest other zone."""
    out = labels.copy()
    min_px = int(min_area_mm2 / cell_mm ** 2)
    bad = np.zeros(labels.shape, bool)
    for k in np.unique(labels):
        if k == 0:
            continue
        n, comp, stats, _ = cv2.connectedComponentsWithStats((labels == k).astype(np.uint8), connectivity=4)
        # keep the largest component of each zone plus any large enough
        order = np.argsort(-stats[1:, cv2.CC_STAT_AREA]) + 1
        for j in order[1:]:
            if stats[j, cv2.CC_STAT_AREA] < min_px:
                bad |= comp == j
    if bad.any():
        src = np.where(bad | (labels == 0), 255, 0).astype(np.uint8)
        _, nearest = cv2.distanceTransformWithLabels(src, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
        good_idx = np.flatnonzero(~(bad | (labels == 0)))
        # map pixel label id → value
        ids = nearest[np.unravel_index(good_idx, labels.shape)]
        lut = np.zeros(ids.max() + 1, labels.dtype)
        lut[ids] = labels.flat[good_idx]
        out[bad] = lut[nearest[bad]]
    return out


# ------------------------------------------------------------- main ----

def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, separators=(",", ":"))
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def build(out_dir: Path = DATA_DIR) -> dict:
    v = load_canonical_face()
    topo = load_topology()["connections"]
    axis = fit_cylinder_axis(v)
    uv = cylinder_uv(v, *axis)
    tri = mesh_triangles(v, topo["FACEMESH_TESSELATION"])
    n_mesh = len(tri)
    tri = fill_holes(v, tri, uv)
    metric = triangle_metric(v, uv, tri)
    surfaces = head_surfaces(v, uv, axis)
    chart = {
        "chart_version": CHART_VERSION,
        "made_by": "models/build_chart.py",
        "description": "Face chart: cylindrical unwrap of models/canonical_face.json about a vertical axis "
                       "(u = R·theta, v = y, mm). Triangles are the faces of the mediapipe tesselation, "
                       "counter-clockwise in (u right, v down).",
        "cylinder": {"axis_x_mm": axis[0], "axis_z_mm": axis[1], "radius_mm": axis[2]},
        "triangles": tri.tolist(),
        "mesh_triangles": n_mesh,
        "hole_fill_note": "triangles after the first mesh_triangles close the eye and mouth openings",
        "vertex_uv_mm": np.round(uv, 4).tolist(),
        "triangle_sigma_mm_per_mm": np.round(metric, 4).tolist(),
        "surfaces": surfaces,
    }
    atlas, labels, names, _ = build_atlas(v, uv, tri, surfaces, topo)
    write_json_atomic(out_dir / "face_chart.json", chart)
    write_json_atomic(out_dir / "atlas.json", atlas)
    if Path(out_dir).resolve() == bundle.ZONES.resolve():
        for name in ("face_chart", "atlas"):
            bundle.register("zones", name, out_dir / f"{name}.json", source="models/build_chart.py")
    return {"triangles": len(tri), "mesh_triangles": n_mesh, "zones": names, "axis": axis,
            "sigma_min": float(metric[:, 0].min()), "sigma_max": float(metric[:, 1].max())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DATA_DIR)
    args = ap.parse_args(argv)
    info = build(args.out)
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
