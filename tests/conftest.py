"""Shared test helpers: the project root on sys.path and the golden fixtures beside the checkout."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures"
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def fixtures_dir():
    if not FIXTURES.is_dir():
        pytest.skip(f"golden fixtures not found at {FIXTURES} (../shared/fixtures beside the checkout)")
    return FIXTURES


@pytest.fixture(scope="session")
def golden(fixtures_dir):
    import torch

    return torch.load(fixtures_dir / "umurl_golden.pt", weights_only=True)
