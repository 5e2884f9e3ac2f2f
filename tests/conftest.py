"""Fixtures of the test suite (the `sample` fixture is in the repository's root conftest.py)."""

from xscreen import xvfb  # noqa: F401  (the Xvfb fixture, for the window tests)
