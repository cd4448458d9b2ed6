import pytest
import torch


@pytest.fixture(autouse=True)
def _modest_threads():
    """The machine is shared: keep intra-op threads modest and runs reproducible."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(old)
