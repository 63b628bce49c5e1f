import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import xgir
from xgir.correct import feedback as FB
from xgir.errors import XgirError
from xgir.models import LeNet


def _records(n, annotator="sim", start=0):
    out = []
    for i in range(n):
        m = np.zeros((8, 8), dtype=bool)
        m[i % 8, :] = True
        out.append(
            FB.FeedbackRecord(
                image_id=(start + i) % 10,
                region_id=start + i,
                region=m,
                accepted=i % 2 == 0,
                annotator=annotator,
            )
        )
    return out


def test_store_roundtrip_and_masks(tmp_path):
    path = tmp_path / "fb.sqlite"
    with FB.FeedbackStore(path, num_images=10, height=8, width=8) as store:
        assert store.add(_records(4)) == 4
        assert store.add([FB.FeedbackRecord(3, 99, (0, 0, 2, 3), True, "alice")]) == 1
        assert len(store) == 5
    with FB.FeedbackStore(path) as store:  # reopen: sizes from the file
        assert (store.num_images, store.height, store.width) == (10, 8, 8)
        rows = store.records(image_id=3)
        assert {r["region_id"] for r in rows} == {3, 99}
        box = [r for r in rows if r["annotator"] == "alice"][0]
        assert box["mask"].sum() == 6 and box["mask"][:2, :3].all()
        assert box["created_at"].endswith("+00:00")
        assert store.asked_images() == {0, 1, 2, 3}
        masks, has = store.feedback_masks()
        # accepted: records 0 and 2 (rows 0 and 2 of images 0 and 2) and alice's box on image 3
        assert has.tolist() == [True, False, True, True] + [False] * 6
        assert masks[0, 0].all() and masks[0].sum() == 8
        assert masks[3].sum() == 6  # record 3 was rejected, only the box counts
    with pytest.raises(XgirError, match="is for num_images=10"):
        FB.FeedbackStore(path, num_images=11, height=8, width=8)


def test_store_rejects_bad_input_and_writes_nothing(tmp_path):
    store = FB.FeedbackStore(tmp_path / "fb.sqlite", num_images=10, height=8, width=8)
    good = _records(2)
    bad_cases = [
        (FB.FeedbackRecord(10, 0, (0, 0, 2, 2), True, "a"), "unknown image id 10"),
        (FB.FeedbackRecord(-1, 0, (0, 0, 2, 2), True, "a"), "unknown image id"),
        (FB.FeedbackRecord(1, 0, (0, 0, 9, 2), True, "a"), "out of range"),
        (FB.FeedbackRecord(1, 0, (3, 0, 3, 2), True, "a"), "out of range"),
        (FB.FeedbackRecord(1, 0, np.zeros((8, 7), bool), True, "a"), "shape"),
        (FB.FeedbackRecord(1, 0, np.zeros((8, 8), bool), True, "a"), "empty"),
        (FB.FeedbackRecord(1, 0, np.full((8, 8), 2), True, "a"), "0/1"),
        (FB.FeedbackRecord(1, 0, (0, 0, 2, 2), True, " "), "annotator"),
        (FB.FeedbackRecord(1, -3, (0, 0, 2, 2), True, "a"), "region id"),
    ]
    for record, message in bad_cases:
        with pytest.raises(XgirError, match=message):
            store.add(good + [record])
    assert len(store) == 0
    store.add(good)
    with pytest.raises(XgirError, match="not saved"):  # duplicate (image, region, annotator)
        store.add(_records(1, start=5) + good[:1])
    assert len(store) == 2
    with pytest.raises(XgirError, match="give num_images"):
        FB.FeedbackStore(tmp_path / "missing.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(XgirError, match="damaged or not an SQLite database") as err:
        FB.FeedbackStore(junk)
    assert "remove" not in str(err.value)


@pytest.mark.parametrize("field", ["accepted", "irrelevant"])
@pytest.mark.parametrize("value", ["no", "False", 0, 1, None])
def test_store_booleans_must_be_booleans(tmp_path, field, value):
    """Issue 14 item 3: accepted="no" was stored as True (bool() of a non-empty string)."""
    store = FB.FeedbackStore(tmp_path / "fb.sqlite", num_images=10, height=8, width=8)
    rec = FB.FeedbackRecord(1, 0, (0, 0, 2, 2), accepted=True, annotator="a")
    with pytest.raises(XgirError, match=f"{field} must be True or False, got {value!r}"):
        store.add([FB.FeedbackRecord(**{**rec.__dict__, field: value})])
    assert len(store) == 0
    store.add([FB.FeedbackRecord(**{**rec.__dict__, field: np.bool_(False)})])
    assert store.records()[0][field] is False


def test_store_locked_corrupt_and_foreign_files(tmp_path):
    """Items 8e and 14: a lock says locked (never 'remove it'), during open and add; a database
    damaged mid-file or a foreign SQLite file is one XgirError and is left as it is."""
    import sqlite3

    path = tmp_path / "fb.sqlite"
    FB.FeedbackStore(path, num_images=10, height=8, width=8).close()
    store = FB.FeedbackStore(path, timeout=0.2)
    other = sqlite3.connect(str(path), isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    for action in (lambda: store.add(_records(1)), lambda: FB.FeedbackStore(path, timeout=0.2)):
        with pytest.raises(XgirError, match="is locked by another process .* retry") as err:
            action()
        assert "remove" not in str(err.value)
    other.execute("ROLLBACK")
    other.close()
    assert store.add(_records(300)) == 300
    store.close()
    # damage the middle of the file: the store refuses to open it, says so, leaves it unchanged
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 4096] = b"\xff" * 4096
    path.write_bytes(bytes(raw))
    with pytest.raises(XgirError, match="damaged or not an SQLite database") as err:
        FB.FeedbackStore(path)
    assert "remove" not in str(err.value) and path.read_bytes() == bytes(raw)
    # a foreign SQLite database is not taken over
    foreign = tmp_path / "app.db"
    con = sqlite3.connect(str(foreign))
    con.execute("CREATE TABLE users (name TEXT)")
    con.commit()
    con.close()
    with pytest.raises(XgirError, match="not an xgir feedback store .*users"):
        FB.FeedbackStore(foreign, num_images=10, height=8, width=8)
    con = sqlite3.connect(str(foreign))
    assert {r[0] for r in con.execute("SELECT name FROM sqlite_master")} == {"users"}
    con.close()


def test_store_exception_mid_write_leaves_no_partial_rows(tmp_path):
    store = FB.FeedbackStore(tmp_path / "fb.sqlite", num_images=10, height=8, width=8)
    store.add(_records(2))
    calls = {"n": 0}
    original = store._insert

    def failing(cursor, row):
        original(cursor, row)
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk on fire")

    store._insert = failing
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.add(_records(5, start=20))
    assert calls["n"] == 3  # three rows were inserted inside the transaction
    assert len(store) == 2
    store._insert = original
    assert store.add(_records(5, start=20)) == 5  # still usable
    assert len(store) == 7


def test_store_killed_process_mid_write_leaves_no_partial_rows(tmp_path):
    path = tmp_path / "fb.sqlite"
    with FB.FeedbackStore(path, num_images=10, height=8, width=8) as store:
        store.add(_records(2))
    script = textwrap.dedent(f"""
        import os, numpy as np
        from xgir.correct import feedback as FB
        store = FB.FeedbackStore({str(path)!r})
        original = store._insert
        count = [0]
        def dying(cursor, row):
            original(cursor, row)
            count[0] += 1
            if count[0] == 3:
                os._exit(17)  # killed: no rollback, no close
        store._insert = dying
        recs = [FB.FeedbackRecord(i, 50 + i, (0, 0, 2, 2), True, "sim") for i in range(6)]
        store.add(recs)
    """)
    src = str(Path(xgir.__file__).parents[1])
    proc = subprocess.run(
        [sys.executable, "-c", script], env={"PYTHONPATH": src}, capture_output=True, timeout=60
    )
    assert proc.returncode == 17, proc.stderr.decode()
    with FB.FeedbackStore(path) as store:
        assert len(store) == 2
        assert {r["region_id"] for r in store.records()} == {0, 1}


def test_mass_threshold():
    s = torch.tensor([[[4.0, -3.0], [2.0, 1.0]]])
    assert FB.mass_threshold(s, 0.4).tolist() == [[[True, False], [False, False]]]
    assert FB.mass_threshold(s, 0.5).tolist() == [[[True, True], [False, False]]]
    assert FB.mass_threshold(s, 1.0).all()
    with pytest.raises(XgirError, match="mass"):
        FB.mass_threshold(s, 0.0)


def test_simulated_annotator():
    irr = torch.zeros(2, 8, 8, dtype=torch.bool)
    irr[:, :2, :2] = True
    rel = torch.zeros(2, 8, 8, dtype=torch.bool)
    rel[:, 4:, 4:] = True
    ann = FB.SimulatedAnnotator(irr, rel)
    on_decoy = np.zeros((8, 8), bool)
    on_decoy[:2, :3] = True  # 4 of 6 pixels on the decoy
    assert ann.accepts(0, on_decoy)
    covers = np.zeros((8, 8), bool)
    covers[:3, :3] = True  # covers the whole decoy, 4/9 of it on it
    assert ann.accepts(0, covers)
    on_digit = np.zeros((8, 8), bool)
    on_digit[:2, :2] = True
    on_digit[4:, 4:] = True
    assert not ann.accepts(1, on_digit)
    elsewhere = np.zeros((8, 8), bool)
    elsewhere[3, 3] = True
    assert not ann.accepts(1, elsewhere)
    recs = ann.annotate([0, 1], [[on_decoy, elsewhere], []], round=2)
    assert [(r.image_id, r.region_id, r.accepted, r.round) for r in recs] == [
        (0, 0, True, 2),
        (0, 1, False, 2),
    ]


def test_proposals_find_a_planted_decoy_and_loop_runs(tmp_path):
    """A model that reads only the top-left corner: the proposals land there."""
    torch.manual_seed(0)
    model = LeNet(width=4, hidden=8)
    with torch.no_grad():
        model.conv1.weight.zero_()
        model.conv1.weight[:, 0, 2, 2] = torch.rand(4) + 0.5
        model.conv1.bias.zero_()
        w = torch.zeros_like(model.hidden.weight).view(8, 8, 7, 7)
        w[:, :, 0, 0] = torch.randn(8, 8)
        model.hidden.weight.copy_(w.view(8, -1))
    n = 6
    images = torch.zeros(n, 1, 28, 28)
    images[:, :, 8:20, 10:18] = 0.8  # the "digit"
    images[:, :, :4, :4] = 1.0  # the decoy
    labels = model(images).argmax(1)
    regions = FB.propose_regions(model, images, labels, "conv2", mass=0.5, max_regions=2)
    assert len(regions) == n
    decoy = torch.zeros(n, 28, 28, dtype=torch.bool)
    decoy[:, :4, :4] = True
    for regs in regions:
        assert regs and (regs[0] & decoy[0].numpy()).sum() >= 0.5 * regs[0].sum()

    from xgir.data.base import ImageDataset

    ds = ImageDataset(
        images=images,
        labels=labels,
        masks=(images[:, 0] > 0.5) & ~decoy,
        extras={"decoy_mask": decoy},
    )
    store = FB.FeedbackStore(tmp_path / "fb.sqlite", n, 28, 28)
    seen = []

    def fine_tune(m, data, masks, has):
        seen.append((masks.clone(), has.clone()))
        return m

    ann = FB.SimulatedAnnotator(decoy, ds.masks)
    hist = FB.active_feedback_loop(
        model,
        ds,
        store,
        ann,
        fine_tune,
        "conv2",
        rounds=2,
        per_round=3,
        evaluate=lambda m: {"score": 1.0},
        progress=False,
    )
    assert [h["images"] for h in hist] == [3, 3] and hist[-1]["with_feedback"] == n
    assert store.asked_images() == set(range(n))
    masks, has = seen[-1]
    assert has.all() and (masks & ~decoy).sum() <= 0.5 * masks.sum()
    with pytest.raises(XgirError, match="strategy"):
        FB.active_feedback_loop(model, ds, store, ann, fine_tune, "conv2", strategy="greedy")
