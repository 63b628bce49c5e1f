"""The app guards its feedback and explains its menu (issue 22): proposals on the explanation's own
evidence are flagged, fine-tuning preconditions are stated before any work, the fine-tune page lists
the annotations it uses, explanations report progress, the menu shows user-facing parameters only,
navigation follows the gallery's sort, the ImageNet model's tree comes from its head."""

from __future__ import annotations

import json
import re
import threading
import time

import numpy as np
import pytest
import torch

from _app_common import client_of, make_state, tiny_bayes
from _app_common import one_line_error as error


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    return make_state(tmp_path_factory.mktemp("guards"), n=40, eval_n=20)


@pytest.fixture(scope="module")
def client(state):
    with client_of(state) as c:
        yield c


def menu_of(html: str) -> list[dict]:
    return json.loads(re.search(r'<script id="menu" type="application/json">(.*?)</script>', html, re.S).group(1))


def test_menu_shows_user_parameters_with_labels_and_ranges(client):
    menu = {m["name"]: m for m in menu_of(client.get("/image/3").text)}
    assert [m for m in menu if menu[m]["default"]] == ["ig"]
    internal = {"progress", "center", "batch_size", "internal_batch_size", "perturbations_per_eval", "method"}
    for m in menu.values():
        names = [p["name"] for p in m["params"]]
        assert not internal & set(names), (m["name"], names)
        labels = [p["label"] for p in m["params"]]
        assert len(set(labels)) == len(labels) and "method" not in labels
        for p in m["params"]:
            if p["kind"] in ("int", "float"):
                assert p["min"] <= p["max"], p
    ranges = {p["name"]: (p["min"], p["max"]) for p in menu["ig"]["params"] if p["kind"] == "int"}
    assert ranges == {"n_steps": (1, 200)}
    assert [p["choices"] for p in menu["ig"]["params"] if p["name"] == "baseline"][0][:1] == ["zeros"]
    assert menu["ganmex"]["disabled"].startswith("needs a trained GANMEX generator")
    assert not menu["ig"]["disabled"]
    err = error(client.get("/api/images/3/explain.png?method=ganmex"), 400)
    assert "ganmex needs a trained GANMEX generator" in err and "missing a required argument" not in err
    page = client.get("/image/3").text
    assert 'value="ganmex"  disabled' in page or 'value="ganmex" disabled' in page or "ganmex (unavailable)" in page


def test_signed_maps_drawn_in_a_diverging_colour_map(client, state):
    import io

    from PIL import Image

    ig = np.asarray(Image.open(io.BytesIO(client.get("/api/images/4/explain.png?method=ig&p.n_steps=8").content)))
    sal = np.asarray(Image.open(io.BytesIO(client.get("/api/images/4/explain.png?method=saliency").content)))
    blue = lambda a: ((a[..., 2].astype(int) - a[..., 0]) > 60).mean()  # noqa: E731
    assert blue(ig) > 0.001  # negative evidence in blue (RdBu)
    assert blue(sal) < 0.001  # a non-negative map: the sequential colour map has no blue


def test_explanations_report_progress(client, state):
    from xgir.app import analysis
    from xgir.app.progress import Run

    slow = state.loaded.model.register_forward_pre_hook(lambda m, a: time.sleep(0.01))
    seen: list[float] = []
    run = Run("rise")
    try:
        params = {"n_masks": 2000, "seed": 3}
        worker = threading.Thread(target=analysis.explain, args=(state, 6, "rise", 1, params, run))
        worker.start()
        while worker.is_alive():
            frac = run.fraction()
            if frac is not None:
                seen.append(frac)
            time.sleep(0.02)
        worker.join()
    finally:
        slow.remove()
    assert any(0 < f < 1 for f in seen), seen[:20]
    assert run.public()["status"] == "done" and run.images >= 2000
    # over HTTP: the run named by the page, then its progress
    assert client.get("/api/images/6/explain.png?method=ig&p.n_steps=16&run=tok-1").status_code == 200
    p = client.get("/api/progress/tok-1").json()
    assert p["status"] == "done" and p["fraction"] == 1.0 and p["images"] >= 16 and "ig" in p["text"]
    error(client.get("/api/progress/nope"), 404)
    assert "run must be" in error(client.get("/api/images/6/explain.png?run=bad!token"), 400)


def test_proposals_on_the_evidence_are_flagged(client, state):
    from xgir.app import analysis

    seen_flag = False
    for i in range(8):
        seg = client.get(f"/api/images/{i}/segments").json()
        assert set(seg["flagged"]) <= set(seg["proposed"]) and set(seg["evidence"]) == {str(s) for s in seg["proposed"]}
        for s in seg["proposed"]:
            ev = seg["evidence"][str(s)]
            assert 0 <= ev["share"] <= 1 and (s in seg["flagged"]) == (ev["core"] >= analysis.FLAG_CORE)
        seen_flag |= bool(seg["flagged"])
        _, core = analysis.evidence(state, i)
        labels = np.array(seg["segments"])
        for s in seg["flagged"]:
            assert core[labels == s].mean() >= analysis.FLAG_CORE
    assert seen_flag  # the tiny model's proposals sit on its evidence somewhere among 8 digits
    page = client.get("/annotate/2").text
    assert 'id="confirm-mark"' in page and "Mark all proposed as irrelevant…" in page


def test_finetune_page_lists_every_annotation_with_thumbnails(client, state):
    irr = np.zeros((28, 28), int)
    irr[:4, :4] = 1
    rel = np.zeros((28, 28), int)
    rel[10:14, 10:14] = 1
    for i in (11, 13):
        assert client.post(f"/api/images/{i}/feedback", json={"irrelevant": irr.tolist()}).status_code == 200
    client.post("/api/images/15/feedback", json={"relevant": rel.tolist()})
    page = client.get("/finetune").text
    for i in (11, 13, 15):
        assert f'<img src="/api/images/{i}/feedback.png"' in page and f'data-id="{i}"' in page
    assert "(none: not used)" in page  # the image with relevant pixels only
    png = client.get("/api/images/11/feedback.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    # the evidence check: a rejected region on the digit's evidence is called out
    from xgir.app import analysis

    _, core = analysis.evidence(state, 17)
    client.post("/api/images/17/feedback", json={"irrelevant": core.astype(int).tolist()})
    assert re.search(r'class="warn" data-id="17"', client.get("/finetune").text)


def test_preconditions_are_stated_before_any_work(tmp_path):
    from xgir.app import build_state

    state = build_state(str(tiny_bayes()), "photos", tmp_path / "fb.db", tmp_path / "out", n=3, eval_images=None)
    with client_of(state) as c:
        page = c.get("/finetune").text
        assert "fine-tuning needs the true labels of the images" in page and "no feedback saved yet" in page
        assert "fine-tuning needs the true labels" in error(c.post("/api/finetune", json={"method": "bayes"}), 400)
        assert "Feedback is saved, but it cannot correct the model here" in c.get("/annotate/0").text
        assert state.jobs.jobs == {}  # nothing started
    with client_of(make_state(tmp_path / "labelled", n=20, eval_n=20)) as c:
        page = c.get("/finetune").text
        assert "fine-tuning needs the true labels" not in page and "no feedback saved yet" in page
        assert "no feedback saved yet" in error(c.post("/api/finetune", json={"method": "guidance"}), 400)


def test_navigation_follows_the_gallery_sort(client, state):
    from xgir.app.api import select

    order = select(state, sort="uncertainty")
    i = order[3]
    page = client.get(f"/image/{i}?sort=uncertainty").text
    assert f'href="/image/{order[2]}?sort=uncertainty" id="prev"' in page
    assert f'href="/image/{order[4]}?sort=uncertainty" id="next"' in page
    annotate = client.get(f"/annotate/{i}?sort=uncertainty").text
    assert f'href="/annotate/{order[4]}?sort=uncertainty" id="next"' in annotate
    assert f'href="/image/{i}?sort=uncertainty"' in client.get("/?sort=uncertainty").text
    assert f'href="/image/{(i + 1) % len(state.images)}" id="next"' in client.get(f"/image/{i}").text


def test_favicon_version_and_the_feedback_store_per_model(client, capsys):
    from xgir.app import default_feedback
    from xgir.cli import main

    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert 'rel="icon"' in client.get("/").text
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("xgir 0.")
    assert default_feedback("efficientnet-lite0", "photos") != default_feedback("bayes.pt", "decoy-digits:train")


def test_the_imagenet_model_tree_comes_from_its_head(tmp_path):
    from xgir.app import analysis, build_state

    state = build_state("efficientnet-lite0", "photos:chelsea", tmp_path / "fb.db", tmp_path / "out", eval_images=None)
    assert analysis.tree_source(state) == "head"
    tree = analysis.confusion_tree(state)
    assert tree.meta["source"] == "head" and tree.default_level == pytest.approx(0.8)
    im = analysis.cwox_image(state, 0)
    names = [[state.classes[c] for c in cl] for cl in im.clusters]
    cats = next(cl for cl in names if "tiger cat" in cl)
    assert "window screen" not in cats and {"tabby", "Egyptian cat"} & set(cats)
    fitted = build_state("efficientnet-lite0", "photos:chelsea", tmp_path / "fb2.db", tmp_path / "out",
                         eval_images=None, tree="images")
    assert analysis.tree_source(fitted) == "images"
    with pytest.raises(Exception, match="--tree must be one of"):
        build_state("efficientnet-lite0", "photos:chelsea", tmp_path / "fb3.db", tmp_path / "out", tree="nope")
    assert torch.equal(state.loaded.head_module.weight, state.loaded.model._fc.weight)
