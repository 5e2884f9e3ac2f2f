"""The console's web app (Starlette, Jinja2 templates rendered on the server, a little plain JavaScript).

Pages: clients (with consent), a client (plans, sessions, notes, photos), the plan
editor (the face chart as SVG), the pre-session checklist and start, the live page
(overlay video as MJPEG, state over a websocket that is also the browser's
heartbeat), a session's review (the report's own templates) and a browser player.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from guidance.console import checklist as cl
from guidance.console.db import Client, Note, Photo, Plan, Session, User, open_db, utcnow
from guidance.console.plans import (PlanDraft, chart_svg, default_handpiece, draft_of, editor_areas, editor_atlas, load_saved,
                                     plan_used, save_plan, slug, zone_table)
from guidance.console.security import SESSION_COOKIE, Logins, csrf_ok, is_loopback, verify_password
from guidance.console.sessions import LiveSession, RunSettings, SessionManager, recording_summary
from guidance.console.texts import PRACTITIONER_TEXT, live_words
from guidance.errors import UserError
from guidance.review.templating import environment

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


@dataclass
class ConsoleConfig:
    data_dir: Path
    db_url: str | None = None  # default: SQLite in data_dir
    host: str = "127.0.0.1"
    port: int = 8470
    run: RunSettings = field(default_factory=RunSettings)
    operator: str = ""  # default operator name on the start form
    require_login: bool = False  # also on 127.0.0.1 (behind a reverse proxy)

    @property
    def needs_login(self) -> bool:
        return self.require_login or not is_loopback(self.host)


class Console:
    """Everything a request handler needs: config, database, the session manager, logins, the CSRF token."""

    def __init__(self, cfg: ConsoleConfig):
        self.cfg = cfg
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        from guidance.console.db import sqlite_url
        self.db_url = cfg.db_url or sqlite_url(cfg.data_dir / "console.db")
        self.Db = open_db(self.db_url)
        self.manager = SessionManager(cfg.run, cfg.data_dir, on_end=self._session_ended)
        self.logins = Logins()
        self.csrf = secrets.token_urlsafe(32)
        env = environment(str(TEMPLATES))
        self.templates = Jinja2Templates(env=env)
        self._players: dict[int, Any] = {}
        self.plans_dir = cfg.data_dir / "plans"
        self.recordings_dir = cfg.data_dir / "recordings"
        self.photos_dir = cfg.data_dir / "photos"
        self._close_interrupted()

    def _close_interrupted(self) -> None:
        """Sessions a crashed console left as running: their run stopped by itself (orphan stop); say so."""
        with self.Db() as db:
            for s in db.scalars(select(Session).where(Session.status.in_(("starting", "running")))).all():
                s.status = "interrupted"
                s.summary = recording_summary(Path(s.recording)) if s.recording else None
                db.add(Note(client_id=s.client_id, session_id=s.id, author="console",
                            text="the console stopped during this session; the session disarmed and stopped by itself"))
            db.commit()

    # ---- helpers ---------------------------------------------------------------------------------
    def page(self, request: Request, name: str, **ctx: Any) -> HTMLResponse:
        live = self.manager.live
        base = {"request": request, "csrf": self.csrf, "user": request.scope.get("user"),
                "live": live if live is not None and live.running else None, "needs_login": self.cfg.needs_login}
        return self.templates.TemplateResponse(request, name, {**base, **ctx})

    def _session_ended(self, live: LiveSession) -> None:
        with self.Db() as db:
            s = db.get(Session, live.db_id)
            if s is None:
                return
            s.ended = utcnow()
            s.summary = live.client.end or recording_summary(live.recording)
            s.status = "failed" if live.error else "ended"
            if live.error:
                db.add(Note(client_id=s.client_id, session_id=s.id, text=f"session failed: {live.error}", author="console"))
            db.commit()

    def checklist(self, client: Client, plan: Plan, live_state: dict | None = None, *, running: bool = False) -> list[cl.Item]:
        run = self.cfg.run
        items = [cl.consent_item(client.consent_given, client.consent_date), cl.plan_item(lambda: load_saved(plan)),
                 cl.models_item()]
        try:
            handpiece = run.handpiece or str(load_saved(plan).handpiece_profile)
        except UserError:
            handpiece = str(default_handpiece())
        items += cl.handpiece_items(handpiece)
        items += [cl.camera_item(run.camera_calibration), cl.disk_item(self.recordings_dir),
                  cl.controller_item(bool(run.publish), live_state if running else None)]
        return items


class Guard:
    """Pure ASGI middleware: Host check, login (beyond loopback), CSRF on every state-changing request."""

    OPEN = ("/login", "/static/")

    def __init__(self, app: ASGIApp, console: Console):
        self.app = app
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        req = Request(scope) if scope["type"] == "http" else None
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        host = headers.get("host", "").rsplit(":", 1)[0].strip("[]")
        cfg = self.console.cfg
        allowed = {"127.0.0.1", "localhost", "::1", cfg.host} | ({"testserver"} if cfg.host == "testserver" else set())
        if cfg.needs_login:
            allowed.add(host)  # beyond loopback the login protects it; a reverse proxy sets its own Host
        if host not in allowed:
            await self._deny(scope, receive, send, 421, "unknown host")
            return
        if scope["type"] == "websocket":
            origin = headers.get("origin", "")
            if origin and origin.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]") not in allowed:
                await self._deny(scope, receive, send, 403, "cross-origin websocket")
                return
        user = None
        if cfg.needs_login:
            cookies = Request(scope).cookies if scope["type"] == "http" else WebSocket(scope, receive, send).cookies
            user = self.console.logins.user(cookies.get(SESSION_COOKIE))
            if user is None and not scope["path"].startswith(self.OPEN):
                if scope["type"] == "http":
                    await RedirectResponse("/login", status_code=303)(scope, receive, send)
                else:
                    await self._deny(scope, receive, send, 403, "login required")
                return
        scope["user"] = user
        if req is not None and req.method not in ("GET", "HEAD", "OPTIONS"):
            token = headers.get("x-guidance-token")
            if token is None and headers.get("content-type", "").startswith(("application/x-www-form-urlencoded",
                                                                              "multipart/form-data")):
                body = b""
                more = True
                while more:
                    msg = await receive()
                    body += msg.get("body", b"")
                    more = msg.get("more_body", False)
                form = await Request({**scope}, _replay(body)).form()
                token = str(form.get("csrf", "")) or None
                receive = _replay(body)
            if not csrf_ok(self.console.csrf, token):
                await self._deny(scope, receive, send, 403, "missing or wrong CSRF token (reload the page)")
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _deny(scope: Scope, receive: Receive, send: Send, code: int, text: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4403, "reason": text})
            return
        await PlainTextResponse(text, status_code=code)(scope, receive, send)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}
    return receive


def _date(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(str(text))
    except ValueError:
        raise UserError("expected a date YYYY-MM-DD", field="date") from None


def build_app(cfg: ConsoleConfig) -> Starlette:
    console = Console(cfg)

    async def home(request: Request) -> Response:
        return RedirectResponse("/clients", status_code=303)

    # ---- login ---------------------------------------------------------------------------------------
    async def login_page(request: Request) -> Response:
        return console.page(request, "login.html", error=None)

    async def login(request: Request) -> Response:
        form = await request.form()
        name, pw = str(form.get("name", "")), str(form.get("password", ""))
        with console.Db() as db:
            u = db.scalars(select(User).where(User.name == name)).first()
            ok = u is not None and verify_password(pw, u.password_hash)
        if not ok:
            return console.page(request, "login.html", error="wrong name or password")
        resp = RedirectResponse("/clients", status_code=303)
        resp.set_cookie(SESSION_COOKIE, console.logins.start(name), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https")
        return resp

    async def logout(request: Request) -> Response:
        console.logins.end(request.cookies.get(SESSION_COOKIE))
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE)
        return resp

    # ---- clients ---------------------------------------------------------------------------------------
    async def clients(request: Request) -> Response:
        with console.Db() as db:
            rows = db.scalars(select(Client).order_by(Client.name)).all()
            data = [{"c": c, "sessions": len(c.sessions), "last": c.sessions[0].started if c.sessions else None} for c in rows]
        return console.page(request, "clients.html", clients=data, error=None)

    async def client_create(request: Request) -> Response:
        form = await request.form()
        name = str(form.get("name", "")).strip()
        if not name:
            with console.Db() as db:
                rows = db.scalars(select(Client).order_by(Client.name)).all()
                data = [{"c": c, "sessions": len(c.sessions), "last": None} for c in rows]
            return console.page(request, "clients.html", clients=data, error="give the client's name")
        try:
            born = _date(str(form.get("born", "")) or None)
            consent_date = _date(str(form.get("consent_date", "")) or None)
        except UserError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        given = form.get("consent_given") in ("on", "1", "true", "yes")
        with console.Db() as db:
            n = (db.scalars(select(Client.id).order_by(Client.id.desc())).first() or 0) + 1
            c = Client(name=name, reference=f"C{n:04d}", born=born, consent_given=given,
                       consent_date=consent_date or (date.today() if given else None))
            db.add(c)
            db.commit()
            cid = c.id
        return RedirectResponse(f"/clients/{cid}", status_code=303)

    def _client(db, cid: int) -> Client:
        c = db.get(Client, cid)
        if c is None:
            raise UserError("no such client", field="client")
        return c

    async def client_page(request: Request) -> Response:
        cid = int(request.path_params["cid"])
        with console.Db() as db:
            c = _client(db, cid)
            plans = [{"p": p, "used": plan_used(db, p)} for p in c.plans]
            sessions = [{"s": s, "plan": s.plan} for s in c.sessions]
            return console.page(request, "client.html", c=c, plans=plans, sessions=sessions, notes=list(c.notes),
                                photos=list(c.photos))

    async def consent(request: Request) -> Response:
        cid = int(request.path_params["cid"])
        form = await request.form()
        with console.Db() as db:
            c = _client(db, cid)
            c.consent_given = form.get("consent_given") in ("on", "1", "true", "yes")
            c.consent_date = (_date(str(form.get("consent_date", "")) or None) or date.today()) if c.consent_given else None
            db.commit()
        return RedirectResponse(f"/clients/{cid}", status_code=303)

    async def add_note(request: Request) -> Response:
        cid = int(request.path_params["cid"])
        form = await request.form()
        text = str(form.get("text", "")).strip()
        live = console.manager.live
        if text:
            with console.Db() as db:
                _client(db, cid)
                sid = live.db_id if live is not None and live.running else None
                db.add(Note(client_id=cid, session_id=sid, text=text, author=request.scope.get("user") or cfg.operator))
                db.commit()
            if live is not None and live.running:
                live.client.send("note", text=text)  # into the recording too
        back = str(form.get("back", "")) or f"/clients/{cid}"
        return RedirectResponse(back if back.startswith("/") else f"/clients/{cid}", status_code=303)

    # ---- plans ------------------------------------------------------------------------------------------
    async def plan_editor(request: Request) -> Response:
        cid = int(request.path_params["cid"])
        pid = request.query_params.get("from")
        with console.Db() as db:
            c = _client(db, cid)
            draft = None
            if pid:
                p = db.get(Plan, int(pid))
                if p is not None and p.client_id == cid:
                    draft = draft_of(p)
        areas = editor_areas()
        body_area = draft["body_area"] if draft else request.query_params.get("area", "")
        if body_area not in {a for a, _ in areas}:
            body_area = ""  # an unknown area in the address: the face chart
        atlas = editor_atlas(body_area)
        return console.page(request, "plan_edit.html", c=c, svg=chart_svg(atlas), zones=zone_table(atlas),
                            areas=areas, body_area=body_area, editing=draft is not None,
                            draft=draft or {"name": "", "zones": {}, "exclusions": [], "margin_mm": 2.0, "ttl_ms": 60,
                                            "stop_at_target": True, "description": "", "body_area": body_area})

    async def plan_save(request: Request) -> Response:
        cid = int(request.path_params["cid"])
        try:
            data = await request.json()
        except json.JSONDecodeError:
            return JSONResponse({"ok": False, "error": "not JSON"}, status_code=400)
        with console.Db() as db:
            c = _client(db, cid)
            try:
                draft = PlanDraft.from_json(data)
                plan, what = save_plan(db, c, draft, console.plans_dir,
                                       handpiece=Path(cfg.run.handpiece) if cfg.run.handpiece else None,
                                       atlas=editor_atlas(draft.body_area))
            except UserError as exc:
                return JSONResponse({"ok": False, "error": str(exc)}, status_code=422)
            return JSONResponse({"ok": True, "plan": plan.id, "version": plan.version, "status": what,
                                 "file": Path(plan.path).name, "next": f"/clients/{cid}"})

    async def plan_file(request: Request) -> Response:
        with console.Db() as db:
            p = db.get(Plan, int(request.path_params["pid"]))
            if p is None:
                return PlainTextResponse("no such plan", status_code=404)
            return PlainTextResponse(Path(p.path).read_text(), media_type="text/yaml")

    # ---- start a session ---------------------------------------------------------------------------------
    async def start_page(request: Request) -> Response:
        cid = int(request.path_params["cid"])
        with console.Db() as db:
            c = _client(db, cid)
            plans = list(c.plans)
            pid = request.query_params.get("plan")
            plan = next((p for p in plans if str(p.id) == pid), plans[-1] if plans else None)
            items = console.checklist(c, plan) if plan else []
        return console.page(request, "start.html", c=c, plans=plans, plan=plan, items=items,
                            blocking=cl.blocking(items), source=cfg.run.source, operator=cfg.operator, error=None)

    async def start_session(request: Request) -> Response:
        cid = int(request.path_params["cid"])
        form = await request.form()
        operator = str(form.get("operator", "")).strip() or (request.scope.get("user") or "")
        if console.manager.live is not None and console.manager.live.running:
            return RedirectResponse("/live", status_code=303)
        with console.Db() as db:
            c = _client(db, cid)
            plan = db.get(Plan, int(str(form.get("plan", "0")) or 0))
            if plan is None or plan.client_id != cid:
                return PlainTextResponse("choose a plan", status_code=400)
            if not operator:
                items = console.checklist(c, plan)
                return console.page(request, "start.html", c=c, plans=list(c.plans), plan=plan, items=items,
                                    blocking=cl.blocking(items), source=cfg.run.source, operator="",
                                    error="give the operator's name (it is written into the recording)")
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            s = Session(client_id=cid, plan_id=plan.id, operator=operator, source=cfg.run.source, recording="",
                        status="starting")
            db.add(s)
            db.commit()
            rec = console.recordings_dir / slug(c.reference) / f"{stamp}-s{s.id}"
            s.recording = str(rec)
            db.commit()
            try:
                console.manager.start(db_id=s.id, plan_path=plan.path, recording=rec, operator=operator,
                                      client_ref=c.reference, client_name=c.name, plan_label=f"{plan.name} v{plan.version}")
            except RuntimeError as exc:
                s.status = "failed"
                db.commit()
                return PlainTextResponse(str(exc), status_code=409)
            s.status = "running"
            db.commit()
        return RedirectResponse("/live", status_code=303)

    # ---- live -----------------------------------------------------------------------------------------
    def _live_items(live: LiveSession) -> list[cl.Item]:
        """The checklist while a session runs: the file checks (models' sha256 …) once a minute, the link live."""
        cached = getattr(live, "checklist_cache", None)
        if cached is None or time.monotonic() - cached[0] > 60:
            with console.Db() as db:
                s = db.get(Session, live.db_id)
                assert s is not None
                items = console.checklist(s.client, s.plan, live.client.state, running=True)
            cached = (time.monotonic(), [i for i in items if i.key != "controller"])
            live.checklist_cache = cached  # type: ignore[attr-defined]
        return cached[1] + [cl.controller_item(bool(cfg.run.publish), live.client.state)]

    async def live_page(request: Request) -> Response:
        live = console.manager.live
        if live is None:
            return RedirectResponse("/clients", status_code=303)
        with console.Db() as db:
            s = db.get(Session, live.db_id)
            zones = sorted(load_saved(s.plan).zones) if s is not None else []
            client_id = s.client_id if s is not None else None
        return console.page(request, "live.html", s=live, zones=zones, client_id=client_id,
                            texts=PRACTITIONER_TEXT, running=live.running)

    async def live_video(request: Request) -> Response:
        live = console.manager.live
        if live is None:
            return PlainTextResponse("no session", status_code=404)
        client = live.client

        async def frames():
            n = 0
            while live.running or n == 0:
                if await request.is_disconnected():
                    break
                n2, jpg = await asyncio.to_thread(client.wait_frame, n, 1.0)
                if jpg is None or n2 == n:
                    if not live.running:
                        break
                    continue
                n = n2
                yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(jpg)).encode()
                       + b"\r\n\r\n" + jpg + b"\r\n")
        return StreamingResponse(frames(), media_type="multipart/x-mixed-replace; boundary=frame",
                                 headers={"Cache-Control": "no-store"})

    def live_json(live: LiveSession) -> dict:
        st = dict(live.client.state)
        words, nxt = live_words(st)
        items = _live_items(live)
        return {"state": st, "words": words, "next": nxt, "running": live.running, "ended": live.ended,
                "error": live.error, "elapsed_s": round(time.monotonic() - live.started, 1),
                "starting": not st, "session": live.db_id, "watching": console.manager.watching(),
                "checklist": cl.as_json(items), "blocking": [i.title + ": " + i.detail for i in cl.blocking(items)]}

    async def live_ws(ws: WebSocket) -> None:
        await ws.accept()
        key = secrets.token_hex(8)
        live = console.manager.live
        try:
            last_items = 0.0
            snapshot: dict = {}
            while True:
                try:
                    msg = await asyncio.wait_for(ws.receive_json(), timeout=0.1)
                    if isinstance(msg, dict) and msg.get("type") == "ping":
                        console.manager.browser_ping(key)
                except asyncio.TimeoutError:
                    pass
                live = console.manager.live
                if live is None:
                    await ws.send_json({"running": False, "ended": True})
                    continue
                now = asyncio.get_running_loop().time()
                if now - last_items > 1.0 or not snapshot:
                    snapshot = await asyncio.to_thread(live_json, live)  # checklist: files, disk (once a second)
                    last_items = now
                else:
                    st = dict(live.client.state)
                    words, nxt = live_words(st)
                    snapshot.update(state=st, words=words, next=nxt, running=live.running, ended=live.ended,
                                    error=live.error, starting=not st, watching=console.manager.watching())
                await ws.send_json(snapshot)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            console.manager.browser_gone(key)

    async def live_command(request: Request) -> Response:
        cmd = request.path_params["cmd"]
        if cmd not in ("arm", "disarm", "pause", "resume", "stop"):
            return JSONResponse({"ok": False, "detail": "unknown command"}, status_code=404)
        live = console.manager.live
        if live is None or not live.running:
            return JSONResponse({"ok": False, "detail": "no session is running"}, status_code=409)
        if cmd == "arm":
            blocking = await asyncio.to_thread(lambda: cl.blocking(_live_items(live)))
            if blocking:
                return JSONResponse({"ok": False, "detail": "cannot arm: " + "; ".join(f"{i.title}: {i.detail}"
                                                                                       for i in blocking)})
        if cmd == "stop":
            await asyncio.to_thread(console.manager.stop)
            return JSONResponse({"ok": True, "detail": "stopped", "next": f"/sessions/{live.db_id}"})
        reply = await asyncio.to_thread(console.manager.command, cmd)
        return JSONResponse({"ok": bool(reply.get("ok")), "detail": reply.get("detail", "")})

    async def live_photo(request: Request) -> Response:
        kind = request.path_params["kind"]
        live = console.manager.live
        if kind not in ("before", "after") or live is None or not live.running:
            return JSONResponse({"ok": False, "detail": "no session is running"}, status_code=409)
        jpg = await asyncio.to_thread(live.client.grab)
        if not jpg:
            return JSONResponse({"ok": False, "detail": "no picture from the camera"})
        with console.Db() as db:
            s = db.get(Session, live.db_id)
            assert s is not None
            folder = console.photos_dir / slug(s.client.reference)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"s{s.id}-{kind}-{datetime.now():%Y%m%d-%H%M%S-%f}.jpg"
            path.write_bytes(jpg)
            ph = Photo(client_id=s.client_id, session_id=s.id, kind=kind, path=str(path))
            db.add(ph)
            db.commit()
            return JSONResponse({"ok": True, "detail": f"{kind} photo taken", "photo": f"/photos/{ph.id}.jpg"})

    async def photo(request: Request) -> Response:
        with console.Db() as db:
            ph = db.get(Photo, int(request.path_params["phid"]))
            if ph is None or not Path(ph.path).is_file():
                return PlainTextResponse("no such photo", status_code=404)
            return FileResponse(ph.path, media_type="image/jpeg")

    # ---- review -----------------------------------------------------------------------------------------
    def _session(db, sid: int) -> Session:
        s = db.get(Session, sid)
        if s is None:
            raise UserError("no such session", field="session")
        return s

    async def session_page(request: Request) -> Response:
        sid = int(request.path_params["sid"])
        with console.Db() as db:
            s = _session(db, sid)
            recorded = Path(s.recording, "frames.jsonl").is_file()
            return console.page(request, "session.html", s=s, c=s.client, plan=s.plan, recorded=recorded,
                                photos=[p for p in s.client.photos if p.session_id == s.id],
                                notes=[n for n in s.client.notes if n.session_id == s.id])

    async def session_report(request: Request) -> Response:
        sid = int(request.path_params["sid"])
        with console.Db() as db:
            s = _session(db, sid)
            rec = s.recording
            c = s.client
        from guidance.review.report import report_sessions
        try:
            ctx = await asyncio.to_thread(report_sessions, [rec], progress=False)
        except UserError as exc:
            return PlainTextResponse(str(exc), status_code=404)
        return console.page(request, "report_page.html", sid=sid, c=c, **{k: v for k, v in ctx.items() if k != "progress"})

    def _player(sid: int, recording: str):
        from guidance.console.player import BrowserPlayer
        p = console._players.get(sid)
        if p is None:
            p = BrowserPlayer(recording)
            console._players = {sid: p}  # one recording's composer in memory at a time
        return p

    async def player_page(request: Request) -> Response:
        sid = int(request.path_params["sid"])
        with console.Db() as db:
            s = _session(db, sid)
            c = s.client
        return console.page(request, "player.html", sid=sid, s=s, c=c)

    async def player_data(request: Request) -> Response:
        sid = int(request.path_params["sid"])
        with console.Db() as db:
            rec = _session(db, sid).recording
        try:
            p = await asyncio.to_thread(_player, sid, rec)
        except UserError as exc:
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=404)
        return JSONResponse(p.data())

    async def player_frame(request: Request) -> Response:
        sid = int(request.path_params["sid"])
        i = int(request.path_params["i"])
        with console.Db() as db:
            rec = _session(db, sid).recording
        p = await asyncio.to_thread(_player, sid, rec)
        jpg = await asyncio.to_thread(p.jpeg, i)
        return Response(jpg, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    async def on_error(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(str(exc), status_code=400)

    routes = [
        Route("/", home), Route("/login", login_page), Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/clients", clients), Route("/clients", client_create, methods=["POST"]),
        Route("/clients/{cid:int}", client_page), Route("/clients/{cid:int}/consent", consent, methods=["POST"]),
        Route("/clients/{cid:int}/notes", add_note, methods=["POST"]),
        Route("/clients/{cid:int}/plans/new", plan_editor), Route("/clients/{cid:int}/plans", plan_save, methods=["POST"]),
        Route("/plans/{pid:int}.yaml", plan_file),
        Route("/clients/{cid:int}/start", start_page), Route("/clients/{cid:int}/sessions", start_session, methods=["POST"]),
        Route("/live", live_page), Route("/live/video.mjpeg", live_video), WebSocketRoute("/live/ws", live_ws),
        Route("/live/photo/{kind}", live_photo, methods=["POST"]),
        Route("/live/{cmd:str}", live_command, methods=["POST"]),
        Route("/photos/{phid:int}.jpg", photo),
        Route("/sessions/{sid:int}", session_page), Route("/sessions/{sid:int}/report", session_report),
        Route("/sessions/{sid:int}/player", player_page), Route("/sessions/{sid:int}/player/data.json", player_data),
        Route("/sessions/{sid:int}/player/frame/{i:int}.jpg", player_frame),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        await asyncio.to_thread(console.manager.close)  # stop a running session cleanly on a normal shutdown

    app = Starlette(routes=routes, middleware=[Middleware(Guard, console=console)],
                    exception_handlers={UserError: on_error}, lifespan=lifespan)
    app.state.console = console
    return app
