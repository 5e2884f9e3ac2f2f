"""How far a face session's neck and décolletage may be placed off by the face pose: the gate's sigma there.

Why: a face session stands the neck and the décolletage on the torso's rest
frame, which is the face tracker's head pose at rest (zones/neck_twist.py).
That pose is biased, not noisy (docs/scalp.md, "What limits the
registration"): the same few mm of depth and degrees of pitch on every frame,
which at the neck, 100-200 mm below the face, and at the décolletage, further
still, become 5-30 mm. The face mapping's own sigma (vision/face/mapping_sigma.py)
is about the landmarks under the tip and knows nothing of it, so without this
term a face session could permit a neck point several mm outside its zone.

Measured (experiments/neck_twist/face_pose_bias.py): the rendered client,
whose head is the canonical face, textured with each face in turn, sitting
still facing the camera; the chart error of neck points (v 95-185 mm, u within
+-40 mm) and décolletage points (15-40 mm below the notch) through the rest
frame made as the product makes it. Per face, median / p90 in mm:

| face (guidance/data/face_sets.yaml) | set | neck | décolletage |
|---|---|---|---|
| single_face.jpg | train | 5.5 / 8.6 | 12.3 / 14.5 |
| obama.jpg | train | 7.7 / 11.4 | 15.7 / 18.2 |
| grace_hopper.jpg | train | 14.2 / 21.4 | 29.3 / 33.4 |
| biden.jpg | train | 9.0 / 13.4 | 18.6 / 22.4 |
| 0-f1-su-ph.jpg | train | 6.6 / 9.7 | 13.2 / 15.7 |
| facexlib_test2.jpg | train | 8.8 / 12.9 | 17.3 / 22.5 |
| WolfgangLanger_Pexels.mp4 | evaluate | 9.4 / 13.8 | 19.0 / 21.8 |
| vitallens_sample_video_1.mp4 | evaluate | 12.3 / 17.1 | 22.9 / 24.8 |
| vitallens_sample_video_2.mp4 | evaluate | 10.5 / 16.2 | 22.6 / 25.2 |
| psychopy_jwpIntro.mp4 | evaluate | 13.9 / 20.5 | 28.0 / 31.9 |
| vidmag_face_input.mp4 | evaluate | 13.2 / 19.8 | 26.5 / 29.3 |

The sigma is set from the training faces alone: the largest per-face p90
(grace_hopper.jpg's). Checked on the evaluation faces: each face's p90 is
within it (largest 20.5 mm on the neck, 31.9 mm on the décolletage). The gate
adds it in quadrature to the tip's, the mapping's and the twist's, so a face
session permits on the neck only 20-odd mm inside a zone, which is most of the
neck denied `near_boundary`: the neck and décolletage need the head band
(docs/neck.md), whose sessions do not use this term (the touches carry them to
about 1 mm).

What it cannot know: a real head is not the canonical face, so a real face
pose's bias at the neck is likely larger than the rendered client's; the
figures are a floor.
"""

from __future__ import annotations

# 1-sigma of a face session's placement of each off-mesh surface (mm): the training faces' largest p90.
FACE_POSE_SIGMA_MM: dict[str, float] = {"neck": 21.4, "decolletage": 33.4}


def face_pose_sigma_mm(surface: str | None) -> float | None:
    """The face pose's placement 1-sigma on this surface in a face session (None: the face mesh, or a surface the
    face pose does not place)."""
    return FACE_POSE_SIGMA_MM.get(surface or "")
