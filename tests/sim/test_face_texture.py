"""The rendered client's face texture: a pinned photo or a pinned video's frame (an evaluation face), named clearly
when it cannot be read."""

from __future__ import annotations

import numpy as np
import pytest

from guidance.errors import UserError
from guidance.sim.head_scene import HeadScene
from guidance.sim.scalp import client_scene, face_texture
from guidance.vision.capture.camera import CameraModel
from guidance.vision.face.head_pose import load_canonical_face
from guidance.zones.atlas import load_atlas
from guidance.zones.chart import load_chart


def test_a_photo_or_a_video_frame_textures_the_rendered_client():
    photo = face_texture("single_face.jpg")
    frame = face_texture("vitallens_sample_video_2.mp4", 30)
    assert photo.ndim == 3 and frame.ndim == 3 and frame.shape[2] == 3
    assert not np.array_equal(frame, face_texture("vitallens_sample_video_2.mp4", 60))  # the frame asked for
    chart = load_chart()
    scene = client_scene(CameraModel.default(640, 480), chart, load_atlas(), load_canonical_face(),
                         np.random.default_rng(0), 1, "vitallens_sample_video_2.mp4", 30)
    assert isinstance(scene, HeadScene) and scene.photo.shape == frame.shape


def test_an_unreadable_texture_is_a_user_error():
    with pytest.raises(UserError, match="frame 100000"):
        face_texture("vitallens_sample_video_2.mp4", 100_000)
    with pytest.raises(UserError, match="unknown sample"):
        face_texture("no_such_face.jpg")
