"""The console's parts without a browser: deny texts, plan versions, checklist, database migrations, login,
CSRF and Host checks (Starlette's test client; the browser tests drive the rest in chromium)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from guidance.console import checklist as cl
from guidance.console.db import Client, Plan, Session, User, open_db, sqlite_url
from guidance.console.plans import PlanDraft, chart_svg, load_saved, save_plan
from guidance.console.security import hash_password, verify_password
from guidance.console.texts import PRACTITIONER_TEXT, live_words, practitioner_text
from guidance.errors import UserError
from guidance.gate import Reason
from guidance.zones.atlas import load_atlas


def test_every_deny_reason_has_practitioner_words_and_a_next_step():
    for r in Reason:
        words, nxt = PRACTITIONER_TEXT[r.value]
        assert words and nxt and "_" not in words
    assert practitioner_text("passes_exceeded") == ("this area has had its passes", "move on to an area that still needs passes")
    assert practitioner_text("some_new_code")[0] == "some new code"  # a newer service's code is still said


def test_a_session_that_asks_for_a_step_says_it_as_the_next_step():
    """A scalp session's touch registration: the console's next step is the touch asked for, not the generic one."""
    from guidance.live.control import state_json
    from guidance.live.overlay import OverlayState
    ask = "touch 3 of 5: the chin (mouth closed), and hold the tip still"
    st = state_json(OverlayState(armed=True, reason="band_unregistered", prompt=ask))
    assert st["prompt"] == ask
    assert live_words(st) == (PRACTITIONER_TEXT["band_unregistered"][0], ask)
    assert live_words(state_json(OverlayState(armed=True, reason="band_unregistered"))) == \
        PRACTITIONER_TEXT["band_unregistered"]


def test_chart_svg_has_every_zone_and_marks_atlas_exclusions():
    atlas = load_atlas()
    svg = chart_svg(atlas)
    for z in atlas.zones.values():
        m = re.search(rf'<path class="([^"]+)" id="zone-{z.name}"', svg)
        assert m, z.name
        assert ("atlas-exclusion" in m.group(1)) == (z.kind == "exclusion")


@pytest.fixture
def db(tmp_path):
    Db = open_db(sqlite_url(tmp_path / "c.db"))
    with Db() as s:
        c = Client(name="Ada", reference="C0001", consent_given=True)
        s.add(c)
        s.commit()
        yield s, c, tmp_path / "plans"


def test_plan_versions_a_used_plan_is_never_rewritten(db):
    s, c, plans = db
    draft = PlanDraft("Full face", {"forehead_central": (2, 3), "cheek_left": (1, 2)}, ["glabella"])
    p1, what = save_plan(s, c, draft, plans)
    assert what == "new" and p1.version == 1
    text1 = Path(p1.path).read_text()
    plan = load_saved(p1)
    assert plan.plan_id == "C0001-full-face-v1" and set(plan.zones) == {"forehead_central", "cheek_left"}
    assert plan.exclusions == ("glabella",) and plan.area == "face"
    assert save_plan(s, c, draft, plans)[1] == "unchanged"
    draft.zones["cheek_right"] = (2, 3)
    p1b, what = save_plan(s, c, draft, plans)
    assert what == "updated" and p1b.id == p1.id and p1b.version == 1  # no session used it yet
    s.add(Session(client_id=c.id, plan_id=p1.id, operator="op", source="0", recording="r"))
    s.commit()
    used_text = Path(p1.path).read_text()
    draft.zones["chin"] = (2, 3)
    p2, what = save_plan(s, c, draft, plans)
    assert what == "new version" and p2.version == 2 and p2.id != p1.id
    assert Path(p1.path).read_text() == used_text != text1
    assert "chin" in Path(p2.path).read_text()
    # the plan schema's own checks, naming the field
    with pytest.raises(UserError, match="zones.0.target_passes"):
        save_plan(s, c, PlanDraft("bad", {"forehead_central": (4, 3)}, []), plans)
    with pytest.raises(UserError, match="exclusion zone"):
        save_plan(s, c, PlanDraft("bad", {"lips": (1, 2)}, []), plans)
    with pytest.raises(UserError, match="tap at least one zone"):
        save_plan(s, c, PlanDraft("empty", {}, []), plans)
    # a mixed plan gets the area its surfaces need
    pm, _ = save_plan(s, c, PlanDraft("mix", {"forehead_central": (1, 2), "neck_anterior": (1, 2)}, []), plans)
    assert yaml.safe_load(Path(pm.path).read_text())["area"] == "mixed"
    # a file changed behind the console's back is refused
    Path(p2.path).write_text(Path(p2.path).read_text().replace("max_passes: 3", "max_passes: 9"))
    with pytest.raises(UserError, match="sha256"):
        load_saved(p2)


def test_checklist_items(tmp_path):
    assert cl.consent_item(False, None).blocks
    assert not cl.consent_item(True, "2026-01-02").blocks
    assert cl.models_item().ok
    hp = cl.handpiece_items("handpiece_default")
    assert hp[0].ok and not hp[1].ok and not hp[1].safety  # nominal tip offset: a warning
    bad = tmp_path / "hp.yaml"
    bad.write_text("name: x\n")
    assert cl.handpiece_items(bad)[0].blocks
    assert not cl.camera_item(None).ok and not cl.camera_item(None).safety
    assert cl.disk_item(tmp_path).ok  # the test machine has room for 30 minutes
    assert not cl.controller_item(False, None).safety  # a dry run: nothing can fire
    assert not cl.controller_item(True, None).blocks  # before the session: checked live
    assert cl.controller_item(True, {"link": "waiting"}).blocks
    refused = cl.controller_item(True, {"link": "controller key refused", "key_refusals": 2})
    assert refused.blocks and "key refused" in refused.detail
    assert not cl.controller_item(True, {"link": "connected (controller)", "key_refusals": 0}).blocks


def test_migrations_match_the_models(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine

    from guidance.console.db import Base
    url = sqlite_url(tmp_path / "m.db")
    open_db(url)
    open_db(url)  # upgrading a current database is a no-op
    with create_engine(url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_passwords_are_scrypt_hashes():
    h = hash_password("correct horse")
    assert h.startswith("scrypt$") and "correct" not in h
    assert verify_password("correct horse", h) and not verify_password("wrong horse!", h)
    assert not verify_password("x", "bcrypt$junk")
    with pytest.raises(ValueError):
        hash_password("short")


def _app(tmp_path, host="127.0.0.1"):
    from starlette.testclient import TestClient

    from guidance.console.app import ConsoleConfig, build_app
    app = build_app(ConsoleConfig(data_dir=tmp_path / "data", host=host))
    return app, TestClient(app, base_url="http://127.0.0.1")


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" content="([^"]+)"', html).group(1)


def test_loopback_console_csrf_and_host_checks(tmp_path):
    app, client = _app(tmp_path)
    r = client.get("/clients")
    assert r.status_code == 200 and "New client" in r.text
    token = _csrf(r.text)
    # no token, wrong token: refused; the page's token: accepted
    assert client.post("/clients", data={"name": "A"}).status_code == 403
    assert client.post("/clients", data={"name": "A", "csrf": "nope"}).status_code == 403
    r = client.post("/clients", data={"name": "Ada", "csrf": token, "consent_given": "on"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/clients/1"
    assert "Consent given on" in client.get("/clients/1").text
    assert client.post("/live/arm").status_code == 403  # JSON commands need the header
    assert client.post("/live/arm", headers={"X-Guidance-Token": token}).status_code == 409  # no session
    # another Host (DNS rebinding): refused
    assert client.get("/clients", headers={"Host": "evil.example"}).status_code == 421
    # the plan editor saves through the schema
    r = client.post("/clients/1/plans", json={"name": "f", "zones": {"nose": {"target_passes": 1, "max_passes": 2}}},
                    headers={"X-Guidance-Token": token})
    assert r.json()["ok"] and r.json()["version"] == 1
    r = client.post("/clients/1/plans", json={"name": "f", "zones": {"lips": {"target_passes": 1, "max_passes": 2}}},
                    headers={"X-Guidance-Token": token})
    assert r.status_code == 422 and "exclusion" in r.json()["error"]
    start = client.get("/clients/1/start").text
    assert 'data-key="consent"' in start and 'data-key="controller"' in start


def test_the_editor_plans_a_body_area_on_its_patch_chart(tmp_path):
    """A plan on the décolletage (sternum patch) from the editor: the patch chart's zones, saved as a body plan
    that `guidance run` loads; a face zone in a body plan and an unknown area are refused or ignored."""
    from sqlalchemy import select

    from guidance.zones.plan import load_plan
    app, client = _app(tmp_path)
    token = _csrf(client.get("/clients").text)
    client.post("/clients", data={"name": "Ada", "csrf": token, "consent_given": "on"})
    assert "/plans/new?area=decolletage" in client.get("/clients/1").text
    page = client.get("/clients/1/plans/new?area=decolletage").text
    assert 'data-zone="decolletage_upper_left"' in page and 'data-zone="patch"' in page
    assert 'data-zone="forehead_central"' not in page and "reference patch" in page
    face = client.get("/clients/1/plans/new?area=no-such-area").text  # an unknown area: the face chart
    assert 'data-zone="forehead_central"' in face and 'data-zone="decolletage_upper_left"' not in face
    hdr = {"X-Guidance-Token": token}
    r = client.post("/clients/1/plans", headers=hdr, json={
        "name": "chest", "body_area": "decolletage",
        "zones": {"decolletage_upper_left": {"target_passes": 2, "max_passes": 3},
                  "decolletage_upper_right": {"target_passes": 2, "max_passes": 3}}})
    assert r.json()["ok"], r.json()
    with app.state.console.Db() as s:
        row = s.scalars(select(Plan).where(Plan.name == "chest")).one()
        plan = load_plan(row.path)
        assert plan.area == "body" and plan.body_area == "decolletage"
        assert set(plan.zones) == {"decolletage_upper_left", "decolletage_upper_right"}
        assert load_saved(row).body_area == "decolletage"
        pid = row.id
    again = client.get(f"/clients/1/plans/new?from={pid}").text  # editing it keeps its chart
    assert 'data-zone="decolletage_upper_left"' in again and '"body_area": "decolletage"' in again
    r = client.post("/clients/1/plans", headers=hdr, json={
        "name": "bad", "body_area": "decolletage", "zones": {"forehead_central": {"target_passes": 1, "max_passes": 2}}})
    assert r.status_code == 422 and "zones.0.zone" in r.json()["error"]
    r = client.post("/clients/1/plans", headers=hdr, json={
        "name": "bad", "body_area": "elbow", "zones": {"elbow_tip": {"target_passes": 1, "max_passes": 2}}})
    assert r.status_code == 422 and "body_area" in r.json()["error"]


def test_beyond_loopback_a_login_is_required(tmp_path):
    app, client = _app(tmp_path, host="0.0.0.0")
    with app.state.console.Db() as s:
        s.add(User(name="ada", password_hash=hash_password("a long password")))
        s.commit()
    r = client.get("/clients", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    page = client.get("/login").text
    token = _csrf(page)
    r = client.post("/login", data={"name": "ada", "password": "wrong password", "csrf": token})
    assert "wrong name or password" in r.text
    r = client.post("/login", data={"name": "ada", "password": "a long password", "csrf": token}, follow_redirects=False)
    assert r.status_code == 303
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/clients").status_code == 200
    with app.state.console.Db() as s:
        assert s.query(User).one().password_hash.startswith("scrypt$")
    client.post("/logout", data={"csrf": token})
    assert client.get("/clients", follow_redirects=False).status_code == 303


def test_console_refuses_a_network_address_without_users(tmp_path, capsys):
    from guidance.cli import main
    assert main(["console", "--data", str(tmp_path / "d"), "--host", "0.0.0.0", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "needs a login" in err and "--add-user" in err


def test_plan_rows_link_to_their_sessions(db):
    s, c, plans = db
    p, _ = save_plan(s, c, PlanDraft("x", {"nose": (1, 2)}, []), plans)
    assert isinstance(p, Plan) and s.get(Plan, p.id).client.reference == "C0001"


def test_a_session_that_cannot_start_is_failed_with_its_reason(tmp_path):
    """`guidance run` refuses a missing camera file: the session is marked failed, the reason kept as a note."""
    import time

    from starlette.testclient import TestClient

    from guidance.console.app import ConsoleConfig, build_app
    from guidance.console.sessions import RunSettings
    app = build_app(ConsoleConfig(data_dir=tmp_path / "data", run=RunSettings(source=str(tmp_path / "no-camera.avi"))))
    client = TestClient(app, base_url="http://127.0.0.1")
    token = _csrf(client.get("/clients").text)
    client.post("/clients", data={"name": "Ada", "csrf": token, "consent_given": "on"})
    client.post("/clients/1/plans", json={"name": "f", "zones": {"nose": {"target_passes": 1, "max_passes": 2}}},
                headers={"X-Guidance-Token": token})
    r = client.post("/clients/1/sessions", data={"plan": "1", "operator": "op", "csrf": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/live"
    live = app.state.console.manager.live
    t_end = time.monotonic() + 60
    while time.monotonic() < t_end and not live.ended:
        time.sleep(0.2)
    time.sleep(0.5)
    assert live.ended and "no-camera.avi" in (live.error or "")
    page = client.get("/clients/1").text
    assert "failed" in page and "no-camera.avi" in page
    r = client.post("/live/arm", headers={"X-Guidance-Token": token})
    assert r.status_code == 409 and not r.json()["ok"]
