"""Fixtures of the fleet tests: the recordings (made once) and a real Dask LocalCluster of two worker processes."""

from __future__ import annotations

import logging

import pytest

from fleet_recordings import make_recordings


@pytest.fixture(scope="session")
def recs(tmp_path_factory):
    return make_recordings(tmp_path_factory.getbasetemp() / "fleet_recordings")


@pytest.fixture(scope="session")
def cluster():
    """The scheduler address of a local cluster: two worker processes, one thread each."""
    from dask.distributed import LocalCluster

    c = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                     silence_logs=logging.ERROR)
    try:
        yield c.scheduler_address
    finally:
        c.close()
