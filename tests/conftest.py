import pytest
import torch

from creditlab import _kernels


@pytest.fixture(params=["numba", "torch"])
def kernel_backend(request, monkeypatch):
    """Run a test under both kernel implementations (compiled CPU kernels and the torch path)."""
    monkeypatch.setattr(_kernels, "BACKEND", request.param)
    return request.param


@pytest.fixture
def one_torch_thread():
    """Train tiny models on one thread: with several, a shared 2-core machine is 10-30x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
