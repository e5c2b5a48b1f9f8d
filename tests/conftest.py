"""Shared test setup: CPU context, oneDNN ISA cap, small configs."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from src.utils.runtime import cap_onednn_isa  # noqa: E402

cap_onednn_isa()

import mindspore as ms  # noqa: E402
import pytest  # noqa: E402

ms.set_context(mode=ms.GRAPH_MODE)
ms.set_device("CPU")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test (excluded from the default run)")


@pytest.fixture(autouse=True)
def _graph_mode():
    """Tests may switch to PyNative; every test starts in graph mode."""
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
