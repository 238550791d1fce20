"""Fixtures of the cloud generators' tests: a loopback Vertex AI, and the real PPE champion as their teacher.
Here once, so each generator's tests (gemini, imagen) meet the same stub and the same teacher."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from feedback.teachers.port import ChampionTeacher
from tests.feedback.synthesis.vertex_stub import VertexStub


@pytest.fixture
def stub() -> Iterator[VertexStub]:
    with VertexStub() as server:
        yield server


@pytest.fixture(scope="module")
def teacher(ppe_pt: Path) -> ChampionTeacher:
    """Loaded once a module: the checkpoint takes seconds to load."""
    return ChampionTeacher(ppe_pt)
