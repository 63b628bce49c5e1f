import torch

from xgir.io import cache_dir, cached, fingerprint


def test_cached_computes_once_and_recomputes_a_corrupt_entry():
    calls = []

    def compute():
        calls.append(1)
        return {"maps": torch.arange(6.0).view(2, 3), "share": 0.25, "clusters": [[1, 2]]}

    key = fingerprint("test-cached", 1)
    first = cached("unit", key, compute)
    second = cached("unit", key, compute)
    assert len(calls) == 1
    assert torch.equal(first["maps"], second["maps"]) and second["share"] == 0.25
    assert second["clusters"] == [[1, 2]]
    (cache_dir() / "unit" / f"{key}.pt").write_bytes(b"not a torch file")
    third = cached("unit", key, compute)
    assert len(calls) == 2 and torch.equal(third["maps"], first["maps"])
