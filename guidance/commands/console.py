"""`guidance console`: the practitioner's local web app (clients, plans, checklist, live session, review)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from guidance.errors import UserError


def default_data_dir() -> Path:
    env = os.environ.get("GUIDANCE_CONSOLE_DATA")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "guidance-console"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("console", help="the practitioner's local web app over the same pipeline (http://127.0.0.1:8470)",
                       description="Clients and consent, plans on the face chart, the pre-session checklist, live sessions "
                                   "(each its own `guidance run` process, disarmed when the console or its browser goes "
                                   "away), reports and a player. Binds 127.0.0.1; any other address requires a login.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; others need a login)")
    p.add_argument("--port", type=int, default=8470)
    p.add_argument("--data", metavar="DIR", help="the console's folder: database, plans, recordings, photos "
                   "(default $GUIDANCE_CONSOLE_DATA or ~/.local/share/guidance-console)")
    p.add_argument("--db", metavar="URL", help="database URL (default: SQLite in DIR; e.g. postgresql+psycopg://user@host/guidance)")
    p.add_argument("--source", default="0", help="camera index, stream URL or video file for sessions (default 0)")
    p.add_argument("--loop", action="store_true", help="play a video source again and again, like a camera (demo, tests)")
    p.add_argument("--publish", metavar="ENDPOINT", help="permit endpoint for the controller, e.g. tcp://127.0.0.1:5571")
    p.add_argument("--keys", metavar="DIR", help="CURVE key directory (`guidance keys generate`)")
    p.add_argument("--insecure", action="store_true", help="no CURVE (development only)")
    p.add_argument("--camera-calibration", metavar="CAM.yaml")
    p.add_argument("--handpiece", metavar="P.yaml", help="handpiece profile for new plans and sessions")
    p.add_argument("--operator", default="", help="default operator name on the start form")
    p.add_argument("--require-login", action="store_true",
                   help="ask for a login on 127.0.0.1 too (behind a reverse proxy that serves other machines)")
    p.add_argument("--orphan-stop-s", type=float, default=30.0,
                   help="a session whose console is gone this long stops by itself (default 30)")
    p.add_argument("--kiosk", action="store_true", help="open the console full screen in chromium on this machine, at idle "
                   "priority so that it never slows the hot path (docs/console.md, cost)")
    p.add_argument("--kiosk-headless", action="store_true", help=argparse.SUPPRESS)  # the bench and tests: no screen
    p.add_argument("--browser", metavar="EXE", help="the chromium for --kiosk (default: chromium on PATH)")
    p.add_argument("--add-user", metavar="NAME", help="add (or reset) a login and exit; the password is read from stdin "
                   "or asked for")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from guidance.console.app import ConsoleConfig, build_app
        from guidance.console.sessions import RunSettings
    except ImportError as exc:  # pragma: no cover - a wheel installed without the console extra
        raise UserError(f"the console needs its extra: pip install 'guidance[console]' ({exc.name} missing)") from None
    data = Path(args.data) if args.data else default_data_dir()
    if args.add_user:
        return _add_user(data, args.db, args.add_user)
    if args.publish and not (args.keys or args.insecure):
        raise UserError("publishing permits needs CURVE keys (--keys DIR) or an explicit --insecure", field="--keys")
    settings = RunSettings(source=args.source, loop=args.loop, publish=args.publish, keys=args.keys, insecure=args.insecure,
                           camera_calibration=args.camera_calibration, handpiece=args.handpiece,
                           extra_args=["--control-orphan-stop-s", str(args.orphan_stop_s)])
    cfg = ConsoleConfig(data_dir=data, db_url=args.db, host=args.host, port=args.port, run=settings, operator=args.operator,
                        require_login=args.require_login)
    app = build_app(cfg)
    if cfg.needs_login:
        from sqlalchemy import func, select

        from guidance.console.db import User
        with app.state.console.Db() as db:
            if not db.scalar(select(func.count()).select_from(User)):
                raise UserError(f"{'--require-login' if args.require_login else 'listening on ' + args.host} needs a login: add one with "
                                f"`guidance console --data {data} --add-user NAME` (and put TLS in front: docs/console.md)",
                                field="--host")
    kiosk = None
    if args.kiosk or args.kiosk_headless:
        from guidance.console.kiosk import Kiosk, find_browser
        kiosk = Kiosk(find_browser(args.browser), args.port, data / "kiosk-browser", host=args.host,
                      headless=args.kiosk_headless)
    import uvicorn
    print(f"guidance console: http://{args.host}:{args.port}/  (data in {data})", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", ws="websockets-sansio",
                    timeout_graceful_shutdown=5)
    finally:
        if kiosk is not None:
            kiosk.close()
    return 0


def _add_user(data: Path, db_url: str | None, name: str) -> int:
    from sqlalchemy import select

    from guidance.console.db import User, open_db, sqlite_url
    from guidance.console.security import hash_password
    pw = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass(f"password for {name}: ")
    try:
        hashed = hash_password(pw)
    except ValueError as exc:
        raise UserError(str(exc), field="password") from None
    data.mkdir(parents=True, exist_ok=True)
    Db = open_db(db_url or sqlite_url(data / "console.db"))
    with Db() as db:
        u = db.scalars(select(User).where(User.name == name)).first()
        if u is None:
            db.add(User(name=name, password_hash=hashed))
        else:
            u.password_hash = hashed
        db.commit()
    print(f"user {name} saved")
    return 0
