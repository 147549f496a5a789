"""Shared fixtures: a real local broker (Tansu) for integration tests.

There is no in-memory Kafka for faust or kafka-python, so end-to-end tests use
the real thing. Tansu starts in a fraction of a second, which makes a fresh
broker per test affordable where a test needs empty topics.

When the Tansu binary is missing the broker tests are skipped with the reason
on a developer machine, but fail in CI (env ``CI`` set): CI must never go green
by silently skipping the integration tests.
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from pipeline.kafka.local import INSTALL_HINT, BrokerNotInstalled, LocalBroker, resolve_binary

__all__ = ["tansu_binary", "broker", "fresh_broker"]


def _binary_or_skip() -> str:
    try:
        return resolve_binary()
    except BrokerNotInstalled as exc:
        message = f"no Tansu broker binary ({INSTALL_HINT}): {exc}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def tansu_binary() -> str:
    """Path of the Tansu binary (skip, or fail in CI, when it is missing)."""
    return _binary_or_skip()


@pytest.fixture(scope="session")
def broker() -> Iterator[LocalBroker]:
    """One Tansu broker for the whole session on a free loopback port.

    Topics outlive a test: use unique topic names, or ``fresh_broker``.
    """
    with LocalBroker(binary=_binary_or_skip()) as b:
        yield b


@pytest.fixture
def fresh_broker() -> Iterator[LocalBroker]:
    """A new, empty Tansu broker for one test (about 0.1 s to start)."""
    with LocalBroker(binary=_binary_or_skip()) as b:
        yield b


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so that a fixture can tell
    in its teardown whether the test failed (and show the processes' logs)."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report
