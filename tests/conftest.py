import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session writes its cache under a temporary folder."""
    monkeypatch.setenv("XGIR_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
