import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
# one thread: the suite is many small operations, which two OpenMP threads slow down badly whenever another
# process shares the two cores (measured up to 8× on the development machines)
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def efficientnet():
    from xaikit.zoo import load_efficientnet_lite0

    return load_efficientnet_lite0()


@pytest.fixture(scope="session")
def chelsea():
    from xaikit.zoo import load_image

    return load_image("chelsea")


# Under pytest-xdist (scripts/test.sh runs the suite on every core), the tests that start a local Ray cluster run
# on one worker, one after the other: two clusters at once would double the memory and contend for the cores.
_RAY_DOC_PAGES = ("docs/run.md", "docs/data_attribution.md")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name == "test_run_ray.py" or any(f"[{page}]" in item.nodeid for page in _RAY_DOC_PAGES):
            item.add_marker(pytest.mark.xdist_group("ray"))
