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


@pytest.fixture(scope="module")
def one_torch_thread():
    """Runs inside the test process use one thread, like the subprocesses the same tests start: on a busy
    2-core machine two spinning threads per run make in-process runs several times slower. Use with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
