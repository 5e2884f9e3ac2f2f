"""The console's database: clients, consent, plans (versioned files), sessions, notes, photos, users.

SQLAlchemy 2 (ORM) on SQLite by default (`DATA/console.db`) or any database URL
(`postgresql+psycopg://user@host/db` for a clinic that shares one). The schema is
made and upgraded by Alembic migrations (`guidance/console/migrations/`), run on
start: `migrate(url)` brings any older database to the current head.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

from sqlalchemy import (JSON, Boolean, Date, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint, create_engine,
                        event)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Client(Base):
    __tablename__ = "clients"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    reference: Mapped[str] = mapped_column(String(64), unique=True)  # what recordings carry (no name in a recording)
    born: Mapped[date | None] = mapped_column(Date, nullable=True)
    consent_given: Mapped[bool] = mapped_column(Boolean, default=False)
    consent_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    plans: Mapped[list["Plan"]] = relationship(back_populates="client", order_by="Plan.id")
    sessions: Mapped[list["Session"]] = relationship(back_populates="client", order_by="Session.id.desc()")
    notes: Mapped[list["Note"]] = relationship(back_populates="client", order_by="Note.id.desc()")
    photos: Mapped[list["Photo"]] = relationship(back_populates="client", order_by="Photo.id.desc()")


class Plan(Base):
    """One version of a plan: a YAML file (the schema of guidance/zones/plan.py); used versions are never rewritten."""

    __tablename__ = "plans"
    __table_args__ = (UniqueConstraint("client_id", "name", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"))
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    client: Mapped[Client] = relationship(back_populates="plans")
    sessions: Mapped[list["Session"]] = relationship(back_populates="plan")


class Session(Base):
    __tablename__ = "sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"))
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"))
    operator: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(500))
    recording: Mapped[str] = mapped_column(String(500))  # the session folder `guidance run --record` wrote
    status: Mapped[str] = mapped_column(String(20), default="starting")  # starting, running, ended, failed
    started: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    ended: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    summary: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    client: Mapped[Client] = relationship(back_populates="sessions")
    plan: Mapped[Plan] = relationship(back_populates="sessions")


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"))
    session_id: Mapped[int | None] = mapped_column(ForeignKey("sessions.id"), nullable=True)
    text: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(200), default="")
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    client: Mapped[Client] = relationship(back_populates="notes")


class Photo(Base):
    """A frame grab from the session's camera: `before` or `after` treatment (a JPEG in DATA/photos)."""

    __tablename__ = "photos"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"))
    session_id: Mapped[int | None] = mapped_column(ForeignKey("sessions.id"), nullable=True)
    kind: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(500))
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    client: Mapped[Client] = relationship(back_populates="photos")


class User(Base):
    """A console login (needed when the console listens beyond 127.0.0.1); the password is stored as scrypt."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def make_engine(url: str) -> Engine:
    engine = create_engine(url, future=True)
    if url.startswith("sqlite"):
        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # foreign keys on, and a journal that survives a crash
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()
    return engine


def migrate(url: str) -> None:
    """Create or upgrade the database to the newest migration (Alembic `upgrade head`)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")


def open_db(url: str) -> sessionmaker:
    migrate(url)
    return sessionmaker(make_engine(url), expire_on_commit=False)
