"""pytest fixtures: one `janus serve` on the tiny fixture model for the whole session."""

from __future__ import annotations

import sys
from pathlib import Path

import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from janus_proc import JanusServer  # noqa: E402


@pytest.fixture(scope="session")
def server():
    """The shared server (no API key). Stopping it with SIGTERM must exit 0."""
    srv = JanusServer().start()
    yield srv
    try:
        code = srv.stop()
    finally:
        srv.kill()
    assert code == 0, f"janus serve exited {code} after SIGTERM\n{srv.log_tail()}"


@pytest.fixture(scope="session")
def client(server):
    """The official OpenAI client pointed at the shared server; no retries, so an error
    status reaches the test as the exception it maps to."""
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def model_id(client):
    """The id the server lists for its one model."""
    models = client.models.list().data
    assert len(models) == 1, models
    return models[0].id
