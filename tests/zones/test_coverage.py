"""Coverage arithmetic on synthetic deposits: known footprint, known passes, exact counts."""

import numpy as np
import pytest

from guidance.zones.atlas import load_atlas
from guidance.zones.coverage import CoverageMap


@pytest.fixture(scope="module")
def atlas():
    return load_atlas()


def _deepest(atlas, name):
    """Chart point deepest inside a zone (so a footprint fits inside)."""
    z = atlas.zones[name]
    d = np.where(atlas.labels == z.label, atlas.distance_mm, -np.inf)
    i, j = np.unravel_index(int(np.argmax(d)), d.shape)
    g = atlas.grid
    return g.u0_mm + j * g.cell_mm, g.v0_mm + i * g.cell_mm, float(d[i, j])


def test_footprint_and_passes_are_exact(atlas):
    cov = CoverageMap(atlas, cell_mm=0.5, targets={"cheek_left": (2, 3)})
    u, v, depth = _deepest(atlas, "cheek_left")
    assert depth > 6
    # a 6 mm disc centred on a cell centre: cells with centre within 3 mm = lattice points in a radius-6 circle
    expected = sum(1 for a in range(-6, 7) for b in range(-6, 7) if a * a + b * b <= 36)
    assert cov.deposit_pulse(u, v, 6.0) == "cheek_left"
    assert int((cov.passes == 1).sum()) == expected == 113
    cov.deposit_pulse(u, v, 6.0)
    s = cov.zone("cheek_left")
    assert s.pulses == 2 and s.cells_at_target == expected and s.cells_over_max == 0
    assert s.fraction_at_target == expected / s.cells
    for _ in range(2):
        cov.deposit_pulse(u, v, 6.0)
    s = cov.zone("cheek_left")
    assert s.pulses == 4 and s.cells_over_max == expected and cov.passes_at(u, v) == 4.0
    # shifted by 1 mm: overlap of two discs counted cell by cell
    cov2 = CoverageMap(atlas, cell_mm=0.5, targets={"cheek_left": (2, 3)})
    cov2.deposit_pulse(u, v, 6.0)
    cov2.deposit_pulse(u + 1.0, v, 6.0)
    both = sum(1 for a in range(-6, 7) for b in range(-6, 7) if a * a + b * b <= 36 and (a - 2) ** 2 + b * b <= 36)
    assert cov2.zone("cheek_left").cells_at_target == both
    assert cov2.passes.sum() == 2 * expected


def test_one_mm_cells_and_zone_edges(atlas):
    cov = CoverageMap(atlas, cell_mm=1.0, targets={"chin": (1, 1), "lips": (1, 1)})
    # full coverage of the chin zone: a pulse on every cell centre with a tiny footprint
    chin = cov.labels == atlas.zones["chin"].label
    ii, jj = np.nonzero(chin)
    for i, j in zip(ii, jj):
        cov.deposit_pulse(cov.u0_mm + j * 1.0, cov.v0_mm + i * 1.0, 0.5)
    s = cov.zone("chin")
    assert s.fraction_at_target == 1.0 and s.cells_over_max == 0 and s.pulses == s.cells == len(ii)
    # a footprint straddling the chin/lips edge: cells counted in their own zone, pulse once
    assert cov.zone("lips").pulses == 0


def test_off_zone_pulse_is_still_accounted_for(atlas):
    cov = CoverageMap(atlas)
    assert cov.deposit_pulse(-199.0, -229.0, 5.0) is None
    assert cov.unplaced_pulses == 1 and cov.passes.sum() == 0


def test_dwell_stand_in(atlas):
    cov = CoverageMap(atlas, targets={"forehead_central": (2, 3)})
    u, v, _ = _deepest(atlas, "forehead_central")
    cov.deposit_dwell(u, v, 4.0, dwell_s=0.75, pulse_rate_hz=4.0)  # 3 equivalent passes
    assert cov.passes_at(u, v) == 3.0
    s = cov.zone("forehead_central")
    assert s.pulses == 0 and s.dwell_s == 0.75 and s.cells_at_target > 0


def test_serialises_and_reloads_losslessly(atlas, tmp_path):
    cov = CoverageMap(atlas, cell_mm=0.5, targets={"cheek_right": (2, 3), "nose": (1, 2)})
    rng = np.random.default_rng(3)
    for _ in range(200):
        u, v = rng.uniform(-60, 60), rng.uniform(-40, 110)
        cov.deposit_pulse(u, v, rng.uniform(3, 9))
    cov.deposit_dwell(-40.0, 30.0, 5.0, 0.3, 3.3)
    cov.save(tmp_path / "cov.json")
    back = CoverageMap.load(tmp_path / "cov.json", atlas)
    assert np.array_equal(back.passes, cov.passes)
    assert back.pulses == cov.pulses and back.dwell_s == cov.dwell_s and back.targets == cov.targets
    assert back.summary() == cov.summary()


def test_max_passes_under_a_footprint_sees_neighbouring_deposits():
    from guidance.zones.coverage import CoverageMap
    cov = CoverageMap()
    z = next(iter(cov.atlas.zones.values()))
    # a point well inside some zone: its innermost cell
    import numpy as np
    d = np.where(cov.atlas.labels == z.label, cov.atlas.distance_mm, -np.inf)
    i, j = np.unravel_index(int(np.argmax(d)), d.shape)
    g = cov.atlas.grid
    u, v = g.u0_mm + j * g.cell_mm, g.v0_mm + i * g.cell_mm
    for _ in range(3):
        cov.deposit_pulse(u + 4.0, v, 4.0)  # treats cells from u + 2 to u + 6
    assert cov.passes_at(u, v) == 0
    assert cov.max_passes_in_disc(u, v, 2.0) == 0  # reaches u + 1: no overlap
    assert cov.max_passes_in_disc(u, v, 6.0) == 3  # reaches u + 3: on treated cells
