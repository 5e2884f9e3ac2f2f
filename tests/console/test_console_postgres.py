"""The console's database on a real PostgreSQL (a throw-away local cluster): migrations, the models, a plan.

Skipped where Debian's postgresql server or psycopg is missing (.ci/run installs the server; psycopg is in
the dev extra). The cluster runs as the `postgres` user on a private socket folder and a free loopback port,
with trust authentication, and is removed afterwards.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from harness import free_port


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@pytest.fixture(scope="module")
def postgres_url():
    pytest.importorskip("psycopg")
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("Debian's postgresql server is needed (.ci/run installs it)")
    runas: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            import pwd
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("no postgres user to run the server as")
        runas = ["runuser", "-u", "postgres", "--"]
    d = tempfile.mkdtemp(prefix="guidance-pg-")
    os.chmod(d, 0o755)
    if runas:
        shutil.chown(d, "postgres", "postgres")
    data, port = os.path.join(d, "data"), free_port()
    r = subprocess.run(runas + [initdb, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-1500:]
    r = subprocess.run(runas + [pg_ctl, "-D", data, "-l", os.path.join(d, "log"), "-w", "-t", "60", "-o",
                                f"-p {port} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr[-1500:]
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(runas + [pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60)
        time.sleep(0.2)
        shutil.rmtree(d, ignore_errors=True)


def test_migrations_and_models_on_postgresql(postgres_url, tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine

    from guidance.console.db import Base, Client, Session, open_db
    from guidance.console.plans import PlanDraft, load_saved, save_plan

    Db = open_db(postgres_url)
    open_db(postgres_url)  # a current database: no-op
    with create_engine(postgres_url).connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    with Db() as db:
        c = Client(name="Ada", reference="C0001", consent_given=True)
        db.add(c)
        db.commit()
        p, what = save_plan(db, c, PlanDraft("face", {"nose": (1, 2)}, []), tmp_path)
        assert what == "new" and load_saved(p).plan_id == "C0001-face-v1"
        db.add(Session(client_id=c.id, plan_id=p.id, operator="op", source="0", recording="r", summary={"pulses": 3}))
        db.commit()
        p2, what = save_plan(db, c, PlanDraft("face", {"nose": (1, 2), "chin": (1, 2)}, []), tmp_path)
        assert what == "new version" and p2.version == 2
    with Db() as db:
        s = db.query(Session).one()
        assert s.summary == {"pulses": 3} and s.plan.version == 1 and s.client.reference == "C0001"
