"""Shared fixtures: one local Ray instance per test session, a temp results dir."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """Start one local Ray instance for the whole session (tests marked ``ray`` use it)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            # Always a fresh instance of our own: a cluster someone started on this
            # machine (`ray start`, a multi-node test's Cluster) is never joined.
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=True,
            configure_logging=False,
        )
    yield ray
    # Left running until the interpreter exits: shutting down and restarting
    # Ray between tests costs seconds each time.


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    """A fresh ``local_dir`` for one test; also set as TUNE_RESULT_DIR."""
    path = tmp_path / "ray_results"
    path.mkdir()
    monkeypatch.setenv("TUNE_RESULT_DIR", str(path))
    return str(path)


def pytest_collection_modifyitems(config, items):
    # Tests marked ``ray`` get the session Ray instance without naming the fixture.
    for item in items:
        if item.get_closest_marker("ray") is not None and "ray_session" not in getattr(
            item, "fixturenames", []
        ):
            item.fixturenames.insert(0, "ray_session")


os.environ.setdefault("RAY_DEDUP_LOGS", "0")
