"""Treatment plan files: the shipped examples load; every kind of bad plan is refused with file, field, exit 2."""

from pathlib import Path

import pytest
import yaml

from guidance.resources import data_dir
from guidance.cli import main
from guidance.zones.plan import load_plan

PLANS = data_dir() / "plans"


def _write(tmp_path: Path, data: dict, name: str = "plan.yaml") -> Path:
    # the plan refers to a handpiece profile next to it
    (tmp_path / "hp.yaml").write_text("name: x\n")
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def _good() -> dict:
    return {"plan_version": 1, "plan_id": "t-1", "area": "face", "handpiece_profile": "hp.yaml",
            "margin_mm": 2.0, "ttl_ms": 60, "stop_at_target": True,
            "zones": [{"zone": "cheek_left", "target_passes": 2, "max_passes": 3},
                      {"zone": "chin", "target_passes": 1, "max_passes": 1}],
            "exclusions": ["nose"]}


@pytest.mark.parametrize("name", ["full_face.yaml", "neck_decolletage.yaml", "scalp.yaml"])
def test_example_plans_check(name, capsys):
    assert main(["plan", "check", str(PLANS / name)]) == 0
    out = capsys.readouterr().out
    plan = load_plan(PLANS / name)
    assert plan.plan_id in out and len(plan.zones) >= 4
    assert plan.handpiece_profile.is_file()


def test_good_plan_parses(tmp_path):
    plan = load_plan(_write(tmp_path, _good()))
    assert plan.zones["cheek_left"].target_passes == 2 and plan.zones["cheek_left"].max_passes == 3
    assert plan.is_planned("chin") and not plan.is_planned("nose")
    assert plan.is_excluded("nose") and plan.is_excluded("lips") and not plan.is_excluded("chin")
    assert plan.margin_mm == 2.0 and plan.ttl_ms == 60 and plan.stop_at_target


def _zone0(d, **kw):
    d["zones"][0].update(kw)
    return d


def _drop(d, key):
    del d[key]
    return d


BAD = {
    "unknown zone": (lambda d: _zone0(d, zone="left_ear"), "zones.0.zone", "unknown zone 'left_ear'"),
    "target above maximum": (lambda d: _zone0(d, target_passes=4), "zones.0.target_passes", "above max_passes"),
    "missing field": (lambda d: _drop(d, "margin_mm"), "margin_mm", "missing field"),
    "missing zone field": (lambda d: (d["zones"][1].pop("max_passes"), d)[1], "zones.1.max_passes", "missing field"),
    "wrong type": (lambda d: {**d, "ttl_ms": "fast"}, "ttl_ms", "wrong type"),
    "wrong type in zone": (lambda d: _zone0(d, target_passes=2.5), "zones.0.target_passes", "wrong type"),
    "treated and excluded": (lambda d: {**d, "exclusions": ["chin"]}, "exclusions.0", "both treated and excluded"),
    "exclusion zone treated": (lambda d: _zone0(d, zone="lips"), "zones.0.zone", "exclusion zone"),
    "zone outside the area": (lambda d: _zone0(d, zone="scalp_mid"), "zones.0.zone", "outside the plan area"),
    "duplicate zone": (lambda d: _zone0(d, zone="chin"), "zones.1.zone", "listed twice"),
    "ttl too long": (lambda d: {**d, "ttl_ms": 500}, "ttl_ms", "maximum"),
    "missing handpiece profile": (lambda d: {**d, "handpiece_profile": "nope.yaml"}, "handpiece_profile",
                                  "not found"),
    "unknown field": (lambda d: {**d, "margn_mm": 1}, "margn_mm", "unknown field"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_plan_is_refused_with_file_and_field(tmp_path, capsys, case):
    mutate, field, message = BAD[case]
    path = _write(tmp_path, mutate(_good()))
    assert main(["plan", "check", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{path}: {field}: " in err, err
    assert message in err, err


def test_unreadable_and_missing_plan(tmp_path, capsys):
    p = tmp_path / "broken.yaml"
    p.write_text("plan_id: [unclosed\n")
    assert main(["plan", "check", str(p)]) == 2
    assert str(p) in capsys.readouterr().err
    assert main(["plan", "check", str(tmp_path / "none.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
