"""Fresh random inputs every run: the seed comes from os.urandom (or PALLAS_TEST_SEED to replay a failure) and is
printed in every assertion message (see helpers.Check)."""

from __future__ import annotations

import os

import pytest

from tests.pallas_kernels.helpers import Check


@pytest.fixture
def check() -> Check:
    seed = int(os.environ.get("PALLAS_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
    return Check(seed)
