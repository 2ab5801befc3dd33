"""Shared fixtures. Every test session gets its own model cache so no test reads a stale file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lutnas.space import SearchSpace


@pytest.fixture(scope="session", autouse=True)
def isolated_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Export cache for the session (LUTNAS_CACHE), unless the caller already chose one."""
    if os.environ.get("LUTNAS_CACHE"):
        return Path(os.environ["LUTNAS_CACHE"])
    path = tmp_path_factory.mktemp("model-cache")
    os.environ["LUTNAS_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def host_check_normalises_only() -> None:
    """End-to-end tests accept any host change (normalised, never refused): `make test` runs two
    processes, so the load changes between a test's profiling and its subnet measurements by design
    (+36% to +78% seen). The refusal itself is tested on scripted devices (test_subnets.py), which
    pass their bound explicitly. A caller's own LUTNAS_MAX_HOST_CHANGE is kept."""
    os.environ.setdefault("LUTNAS_MAX_HOST_CHANGE", "10000")


@pytest.fixture(scope="session")
def tiny_space() -> SearchSpace:
    return SearchSpace.load("tiny")


@pytest.fixture(scope="session")
def elasticvit_space() -> SearchSpace:
    return SearchSpace.load("elasticvit")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest first: `make test` runs two processes a file at a time, and the README walk alone is
    most of the suite's length; started last, it would run alone at the end. A slow test may give
    its rough length (`@pytest.mark.slow(minutes=10)`, default 1); other tests count 0."""
    def minutes(item: pytest.Item) -> float:
        marker = item.get_closest_marker("slow")
        return 0.0 if marker is None else float(marker.kwargs.get("minutes", 1))

    items.sort(key=minutes, reverse=True)  # stable: collection order within equal lengths
