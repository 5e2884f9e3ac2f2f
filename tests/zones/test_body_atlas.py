"""The body atlas on the patch chart, body plans, and body coverage: the face machinery, another chart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from guidance.cli import main
from guidance.resources import data_dir
from guidance.vision.handpiece.designs import PatchDesign
from guidance.zones.body_atlas import atlas_named, body_area_names, load_body_area, plan_atlas
from guidance.zones.coverage import CoverageMap
from guidance.zones.plan import load_plan


def test_every_area_loads_with_the_patch_as_an_exclusion_and_a_zone_at_every_point_in_range():
    assert set(body_area_names()) >= {"abdomen", "flank", "thigh"}
    w, h = PatchDesign().size_mm
    for name in body_area_names():
        area = load_body_area(name)
        atlas = area.atlas
        assert atlas.name == f"body/{name}" and atlas_named(atlas.name) is atlas
        patch = atlas.zones["patch"]
        assert patch.kind == "exclusion" and patch.buffer_mm >= 5.0 and patch.surface == "body"
        assert all(z.surface == "body" for z in atlas.zones.values())
        assert area.patch_size_mm == (w, h)
        # the card is the patch exclusion, its corners included
        for u, v in ((0.0, 0.0), (w / 2 - 0.5, h / 2 - 0.5), (-w / 2 + 0.5, -h / 2 + 0.5)):
            assert atlas.zone_at(u, v)[0] is patch
        # every point of the trusted ellipse lies in a zone; nothing lies outside it
        rng = np.random.default_rng(1)
        a, b = area.range_mm
        for _ in range(300):
            r, th = np.sqrt(rng.uniform(0, 0.98)), rng.uniform(0, 2 * np.pi)
            u, v = a * r * np.cos(th), b * r * np.sin(th)
            assert area.in_range(u, v) and atlas.zone_at(u, v)[0] is not None, (name, u, v)
        assert not area.in_range(a * 1.02, 0.0) and atlas.zone_at(a + 2.0, 0.0)[0] is None
        # the exclusion clearance on the body is the card's, less its buffer
        c = atlas.exclusion_clearance_mm(0.0, h / 2 + 20.0, "body")
        assert c is not None and c[1] == "patch" and abs(c[0] - (20.0 - patch.buffer_mm)) <= 1.0


def test_the_bundled_body_plan_loads_on_its_area_and_its_coverage_is_on_the_patch_chart():
    plan = load_plan("body_abdomen")
    assert plan.area == "body" and plan.body_area == "abdomen"
    assert plan_atlas(plan).name == "body/abdomen"
    assert plan.is_excluded("patch") and not plan.is_excluded("abdomen_upper_left")
    cov = CoverageMap.for_plan(plan)  # no atlas passed: a body plan's coverage is on its own chart
    assert cov.atlas.name == "body/abdomen"
    cov.deposit_pulse(40.0, -60.0, 10.0)
    d = cov.to_dict()
    assert d["atlas"] == "body/abdomen"
    back = CoverageMap.from_dict(d)  # without an atlas: found by name
    assert back.atlas.name == "body/abdomen" and np.array_equal(back.passes, cov.passes)
    assert back.zone("abdomen_upper_left").pulses == 1
    assert "atlas" not in CoverageMap.for_plan(load_plan("full_face")).to_dict()  # face coverage as before


def _plan(tmp_path: Path, **kw) -> Path:
    (tmp_path / "hp.yaml").write_text("name: x\n")
    data = {"plan_version": 1, "plan_id": "b-1", "area": "body", "body_area": "thigh", "handpiece_profile": "hp.yaml",
            "margin_mm": 2.0, "ttl_ms": 60, "zones": [{"zone": "thigh_upper", "target_passes": 2, "max_passes": 3}]}
    data.update(kw)
    data = {k: v for k, v in data.items() if v is not None}
    p = tmp_path / "plan.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize("change,field", [
    (dict(body_area=None), "body_area"),
    (dict(body_area="forearm"), "body_area"),
    (dict(zones=[{"zone": "abdomen_upper_left", "target_passes": 2, "max_passes": 3}]), "zones.0.zone"),  # another area
    (dict(zones=[{"zone": "cheek_left", "target_passes": 2, "max_passes": 3}]), "zones.0.zone"),  # a face zone
    (dict(zones=[{"zone": "patch", "target_passes": 2, "max_passes": 3}]), "zones.0.zone"),  # the card
    (dict(area="face", zones=[{"zone": "cheek_left", "target_passes": 2, "max_passes": 3}]), "body_area"),
])
def test_a_bad_body_plan_is_refused_naming_the_field(tmp_path, capsys, change, field):
    assert main(["plan", "check", str(_plan(tmp_path, **change))]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and field in err


def test_a_good_body_plan_checks(tmp_path, capsys):
    assert main(["plan", "check", str(_plan(tmp_path))]) == 0
    assert "body: thigh" in capsys.readouterr().out


def test_atlas_command_draws_and_lists_a_body_area(tmp_path, capsys):
    assert main(["atlas", "--body", "abdomen", "--list"]) == 0
    out = capsys.readouterr().out
    assert "body/abdomen" in out and "abdomen_lower_right" in out and "navel" in out
    assert main(["atlas", "--body", "abdomen", "-o", str(tmp_path / "a.png")]) == 0
    assert (tmp_path / "a.png").stat().st_size > 1000
    assert main(["atlas", "--body", "knee"]) == 2


def test_the_body_atlas_is_in_the_manifest():
    assert (data_dir() / "zones" / "body_atlas.json").is_file()
