"""The look-ahead's speed is the tip's speed over the skin, not in the camera: head motion is not hand motion."""

import math

import pytest

from guidance.zones.skin_speed import SkinSpeed

DT = 33_333_333


def test_a_glide_over_the_skin_reads_its_speed():
    s = SkinSpeed()
    speeds = [s.update(k * DT, (35.0 * k * DT / 1e9, 0.0)) for k in range(30)]
    assert speeds[0] is None  # unknown on the first sample: the gate denies on it
    assert speeds[-1] == pytest.approx(35.0, rel=1e-6)


def test_a_tip_resting_on_a_moving_head_is_still():
    """The chart position of a tip resting on the skin stays put however the head nods: speed 0."""
    s = SkinSpeed()
    for k in range(30):
        v = s.update(k * DT, (12.0, -4.0))
    assert v == 0.0


def test_a_gap_or_a_lost_tip_makes_the_speed_unknown_again():
    s = SkinSpeed()
    for k in range(5):
        s.update(k * DT, (float(k), 0.0))
    assert s.update(5 * DT, None) is None
    assert s.update(6 * DT, (6.0, 0.0)) is None
    assert s.update(6 * DT + 200_000_000, (7.0, 0.0)) is None  # more than 150 ms since the last sample
    assert s.update(6 * DT + 200_000_000 + DT, (7.0, 0.0)) == 0.0
    assert s.update(8 * DT + 200_000_000, (math.nan, 0.0)) is None
