import pytest

from creditlab import _kernels


@pytest.fixture(params=["numba", "torch"])
def kernel_backend(request, monkeypatch):
    """Run a test under both kernel implementations (compiled CPU kernels and the torch path)."""
    monkeypatch.setattr(_kernels, "BACKEND", request.param)
    return request.param
