
import pytest
import torch

torch.set_num_threads(1)  # tiny test models run far faster single-threaded


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session writes its cache under a temporary folder."""
    monkeypatch.setenv("XGIR_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
