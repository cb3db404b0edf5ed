"""Every test of the architecture matrix runs its tiny models on one torch thread (far faster on these cores than
two), restored after each module."""

from __future__ import annotations

import pytest

from tests.training_fixtures import single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield
