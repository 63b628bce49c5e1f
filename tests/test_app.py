"""xgir app through Starlette's test client: pages, explanations, feedback round trips, the
correction job, and bad requests (4xx with one line, never a traceback)."""

from __future__ import annotations

import io
import json
import sqlite3
import threading
import time
import warnings

import numpy as np
import pytest

from _app_common import BASE, N_IMAGES, client_of, make_state, one_line_error

with warnings.catch_warnings():  # Starlette 1.x suggests httpx2; httpx is what it runs on here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    return make_state(tmp_path_factory.mktemp("app"))


@pytest.fixture(scope="module")
def client(state):
    with client_of(state) as c:
        yield c


def mask_of(client, i: int, k: int = 0) -> np.ndarray:
    seg = client.get(f"/api/images/{i}/segments").json()
    labels = np.array(seg["segments"])
    return labels == seg["proposed"][k]


def test_gallery_filters_sorts_and_pages(client, state):
    r = client.get("/")
    assert r.status_code == 200 and r.text.count('class="card') == 48 and "next &rarr;" in r.text
    assert client.get("/?page=3").text.count('class="card') == N_IMAGES - 96
    rows = client.get("/api/images", params={"mis": "1"}).json()["images"]
    assert rows and all(r["correct"] is False for r in rows)
    assert len(rows) == int((state.preds.pred != state.images.labels).sum())
    unc = [r["uncertainty"] for r in client.get("/api/images", params={"sort": "uncertainty"}).json()["images"]]
    assert unc == sorted(unc, reverse=True) and len(unc) == N_IMAGES
    cls = client.get("/api/images", params={"cls": "3"}).json()["images"]
    assert cls and all(r["pred"] == 3 or r["label"] == 3 for r in cls)
    assert "MI " in r.text  # Bayesian model: predictive uncertainty shown


def test_pages_render(client):
    for url in ("/image/5", "/annotate/5", "/finetune"):
        r = client.get(url)
        assert r.status_code == 200 and "<html" in r.text, url
    assert 'id="cwox-run"' in client.get("/image/5").text


def test_images_and_explanations_are_png(client, state):
    from PIL import Image

    for url in ("/api/images/5/image.png", "/api/images/5/explain.png", "/api/images/5/proposals.png",
                "/api/images/5/explain.png?method=saliency&target=label",
                "/api/images/5/explain.png?method=occlusion&p.window=7&p.stride=7"):
        r = client.get(url)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", url
        img = Image.open(io.BytesIO(r.content))
        assert img.size == (252, 252), url  # 28 px enlarged 9x
    err = one_line_error(client.get("/api/images/5/explain.png?method=nope"), 400)
    assert "unknown explainer" in err
    assert "bad parameters" in one_line_error(client.get("/api/images/5/explain.png?method=saliency&p.bogus=1"), 400)
    assert "class index" in one_line_error(client.get("/api/images/5/explain.png?target=99"), 400)


def test_cwox_tree_with_class_names(client, state):
    data = client.get("/api/images/5/cwox").json()
    classes = [c["id"] for cl in data["clusters"] for c in cl["classes"]]
    assert classes and len(classes) == len(set(classes))
    assert all(c["name"] == state.classes[c["id"]] for cl in data["clusters"] for c in cl["classes"])
    probs = [cl["prob"] for cl in data["clusters"]]
    assert probs == sorted(probs, reverse=True)
    assert client.get(data["clusters"][0]["map"]).headers["content-type"] == "image/png"
    multi = [cl for cl in data["clusters"] if len(cl["classes"]) > 1]
    if multi:
        assert client.get(multi[0]["class_maps"][-1]).status_code == 200
    one_line_error(client.get("/api/images/5/cwox/99.png"), 404)
    one_line_error(client.get("/api/images/5/cwox?level=2"), 400)


def test_segments_are_the_thesis_proposals(client, state):
    from xgir.correct.feedback import propose_regions

    seg = client.get("/api/images/7/segments").json()
    labels = np.array(seg["segments"])
    assert labels.shape == (28, 28) and 1 <= len(seg["proposed"]) <= 5
    x = state.images.images[7:8].clone().requires_grad_(True)
    expected = propose_regions(state.loaded.model, x, state.images.labels[7:8], "relu2", mass=0.8)[0]
    assert [bool((labels == s).sum() == r.sum() and (r[labels == s]).all()) for s, r in
            zip(seg["proposed"], expected, strict=True)] == [True] * len(expected)


def test_feedback_round_trip_one_transaction_per_save(client, state):
    irr = mask_of(client, 9)
    rel = np.zeros_like(irr)
    rel[10:14, 10:14] = True
    rel &= ~irr
    r = client.post("/api/images/9/feedback", json={"irrelevant": irr.astype(int).tolist(),
                                                    "relevant": rel.astype(int).tolist(), "annotator": "ann"})
    assert r.status_code == 200 and r.json()["saved"] == 2
    got = client.get("/api/images/9/feedback").json()
    assert (np.array(got["irrelevant"]) == irr).all() and (np.array(got["relevant"]) == rel).all()
    with sqlite3.connect(state.feedback_path) as db:
        rows = db.execute("SELECT region_id, irrelevant, accepted, annotator FROM feedback WHERE image_id = 9 "
                          "ORDER BY region_id").fetchall()
    assert rows == [(0, 1, 1, "ann"), (1, 0, 1, "ann")]
    # saving again replaces that annotator's rows; an empty save clears them
    client.post("/api/images/9/feedback", json={"irrelevant": irr.astype(int).tolist(), "annotator": "ann"})
    with state.store() as store:
        assert len(store.records(9)) == 1
    client.post("/api/images/9/feedback", json={"irrelevant": None, "annotator": "ann"})
    with state.store() as store:
        assert store.records(9) == []
    assert 'feedback</span>' not in client.get("/?page=1").text.split('data-id="9"')[1].split("</a>")[0]


def test_bad_requests_are_refused_with_one_line(client):
    good = np.zeros((28, 28), int)
    good[:4, :4] = 1
    assert "unknown image id" in one_line_error(client.get("/api/images/100/image.png"), 404)
    one_line_error(client.post("/api/images/100/feedback", json={"irrelevant": good.tolist()}), 404)
    url = "/api/images/3/feedback"
    assert "28x28" in one_line_error(client.post(url, json={"irrelevant": good[:, :27].tolist()}), 400)
    assert "0 and 1" in one_line_error(client.post(url, json={"irrelevant": (good * 2).tolist()}), 400)
    one_line_error(client.post("/api/images/3/feedback", json={"irrelevant": [["a"] * 28] * 28}), 400)
    assert "unknown field" in one_line_error(client.post("/api/images/3/feedback", json={"path": "/etc/passwd"}), 400)
    assert "annotator" in one_line_error(client.post("/api/images/3/feedback", json={"annotator": "<script>"}), 400)
    assert "valid JSON" in one_line_error(client.post("/api/images/3/feedback", content=b"{not json"), 400)
    assert "too large" in one_line_error(client.post("/api/images/3/feedback", content=b"x" * (5 * 2**20)), 413)
    origin = {"Origin": "http://evil.example"}
    assert "origin" in one_line_error(client.post("/api/images/3/feedback", json={"irrelevant": good.tolist()},
                                                  headers=origin), 403)
    one_line_error(client.get("/api/images/3/image.png", headers=origin), 403)
    one_line_error(client.get("/", headers={"Host": "attacker.example"}), 403)
    for path in ("/api/images/../etc/passwd", "/api/images/..%2F..%2Fetc%2Fpasswd/image.png",
                 "/api/images/%2Fetc%2Fpasswd/feedback", "/api/images/-1/image.png", "/image/..%2Fsecret",
                 "/static/..%2F..%2Fserver.py", "/api/images/1e3/image.png"):
        r = client.get(path)
        assert r.status_code == 404 and "root:" not in r.text and "Traceback" not in r.text, path
    one_line_error(client.post("/api/images/..%2F..%2Fetc%2Fpasswd/feedback", json={}), 404)
    same = client.post("/api/images/3/feedback", json={"irrelevant": good.tolist()}, headers={"Origin": BASE})
    assert same.status_code == 200


def test_no_traceback_on_internal_errors(state, monkeypatch):
    from xgir.app import render
    from xgir.app.server import create_app

    def boom(*_a, **_k):
        raise ZeroDivisionError("secret internals")

    monkeypatch.setattr(render, "image_png", boom)
    with TestClient(create_app(state), base_url=BASE, raise_server_exceptions=False) as c:
        r = c.get("/api/images/42/image.png")
    assert r.status_code == 500 and "secret" not in r.text and "Traceback" not in r.text
    assert r.json() == {"error": "internal error; the server log has the details"}


def test_concurrent_saves_corrupt_nothing(state):
    from xgir.app.server import create_app

    errors = []

    def save(k: int) -> None:
        with TestClient(create_app(state), base_url=BASE) as c:
            for i in range(20, 26):
                m = np.zeros((28, 28), int)
                m[k : k + 3, i - 20 : i - 17] = 1
                r = c.post(f"/api/images/{i}/feedback", json={"irrelevant": m.tolist(), "annotator": f"tab{k}"})
                if r.status_code != 200:
                    errors.append(r.text)

    threads = [threading.Thread(target=save, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with state.store() as store:
        recs = [r for r in store.records() if 20 <= r["image_id"] < 26]
    assert len(recs) == 24 and all(int(r["mask"].sum()) == 9 for r in recs)
    with sqlite3.connect(state.feedback_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def wait(client, job: int, limit: float = 120) -> dict:
    t = time.time()
    while time.time() - t < limit:
        data = client.get(f"/api/jobs/{job}").json()
        if data["status"] != "running":
            return data
        time.sleep(0.2)
    raise AssertionError("the job did not finish")


def test_finetune_validation_and_a_correction(tmp_path):
    from xgir.app.server import create_app
    from xgir.app.state import predict
    from xgir.models import load_model

    state = make_state(tmp_path, n=60, eval_n=60)
    with TestClient(create_app(state), base_url=BASE) as c:
        assert "no feedback" in one_line_error(c.post("/api/finetune", json={"method": "bayes"}), 400)
        for i in (2, 4, 6):
            c.post(f"/api/images/{i}/feedback", json={"irrelevant": mask_of(c, i).astype(int).tolist()})
        assert "method" in one_line_error(c.post("/api/finetune", json={"method": "magic"}), 400)
        assert "epochs" in one_line_error(c.post("/api/finetune", json={"epochs": 0}), 400)
        assert "epochs" in one_line_error(c.post("/api/finetune", json={"epochs": "3"}), 400)
        assert "unknown parameter" in one_line_error(c.post("/api/finetune", json={"out": "/etc"}), 400)
        r = c.post("/api/finetune", json={"method": "bayes", "epochs": 2})
        assert r.status_code == 202
        job = wait(c, r.json()["job"])
        assert job["status"] == "done", job
        res = job["result"]
        assert res["annotated"] == 3 and sorted(res["ids"]) == [2, 4, 6]
        assert set(res["before"]["overlap"]) == {"Saliency", "DeepLIFT", "Occlusion", "Grad-CAM"}
        page = c.get(f"/results/{r.json()['job']}").text
        assert 'id="overlap"' in page and "before" in page
        assert c.get(f"/api/jobs/{r.json()['job']}/maps/2/after/Grad-CAM.png").status_code == 200
        one_line_error(c.get(f"/api/jobs/{r.json()['job']}/maps/3/after/Grad-CAM.png"), 404)
        # the checkpoint is the corrected model: load_model reads it back and predicts as the job measured
        loaded = load_model(res["checkpoint"])
        acc = float((predict(loaded.model, state.images.images, state.samples).pred == state.images.labels)
                    .float().mean())
        assert acc == pytest.approx(res["after"]["accuracy_images"])
        # a guidance loss with the same feedback
        r = c.post("/api/finetune", json={"method": "guidance", "loss": "rrr", "epochs": 1})
        job = wait(c, r.json()["job"])
        assert job["status"] == "done" and job["result"]["weight"] > 0, job


def test_one_job_at_a_time():
    from xgir.app.jobs import JobManager

    gate = threading.Event()
    jobs = JobManager()
    first = jobs.start({}, lambda job: gate.wait(10) and {})
    with pytest.raises(RuntimeError, match="already running"):
        jobs.start({}, lambda job: {})
    gate.set()
    for _ in range(100):
        if first.status != "running":
            break
        time.sleep(0.05)
    assert first.status == "done"


def test_cli_errors_are_one_line(capsys, tmp_path):
    from xgir.cli import main

    assert main(["app", "--model", str(tmp_path / "missing.pt"), "--images", "decoy-digits:train"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["app", "--model", "x.pt", "--images", "photos", "--port", str(port)]) == 2
    assert "pick another --port" in capsys.readouterr().err


def test_any_host_only_when_asked(state):
    from xgir.app.server import create_app

    with TestClient(create_app(state, hosts=None), base_url="http://192.0.2.7:8000") as c:
        assert c.get("/api/images/1/image.png").status_code == 200
    with TestClient(create_app(state), base_url="http://192.0.2.7:8000") as c:
        one_line_error(c.get("/api/images/1/image.png"), 403)


def test_cli_serves_survives_kill_and_stops_on_ctrl_c(tmp_path):
    """Feedback saved before a SIGKILL is there when the app starts again; Ctrl-C exits cleanly."""
    import signal
    import subprocess
    import sys
    import urllib.request

    from _app_common import tiny_bayes
    from xgir.app.browser import free_port

    def start() -> tuple[subprocess.Popen, str]:
        port = free_port()
        cmd = [sys.executable, "-c", "import sys; from xgir.cli import main; sys.exit(main())", "app",
               "--model", str(tiny_bayes()), "--images", "decoy-digits:train", "--n", "20", "--eval", "none",
               "--feedback", str(tmp_path / "f.db"), "--out", str(tmp_path), "--port", str(port)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                with urllib.request.urlopen(base + "/", timeout=5) as r:
                    assert r.status == 200 and "Gallery" in r.read().decode()
                return proc, base
            except OSError:
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.1)
        raise AssertionError("the app did not start")

    mask = np.zeros((28, 28), int)
    mask[:4, :4] = 1
    proc, base = start()
    try:
        req = urllib.request.Request(base + "/api/images/5/feedback", data=json.dumps({"irrelevant": mask.tolist()})
                                     .encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert json.loads(r.read())["saved"] == 1
    finally:
        proc.kill()  # SIGKILL: no shutdown code runs
        proc.communicate(timeout=30)
    proc, base = start()
    try:
        with urllib.request.urlopen(base + "/api/images/5/feedback", timeout=30) as r:
            assert (np.array(json.loads(r.read())["irrelevant"]) == mask).all()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert f"open {base}/" in out and "Traceback" not in err


def test_image_specs(tmp_path):
    from PIL import Image
    from torch import nn

    from xgir.app.images import evaluation_spec, load_image_set
    from xgir.data.transforms import Preprocess
    from xgir.errors import XgirError
    from xgir.models import LoadedModel

    loaded = LoadedModel(nn.Identity(), Preprocess(size=64), ["a"], "x")
    photos = load_image_set("photos", loaded, n=3)
    assert photos.images.shape == (3, 3, 64, 64) and photos.names == ["chelsea", "coffee", "astronaut"]
    assert (photos.labels == -1).all()
    for k in range(2):
        Image.new("RGB", (40, 30), (200, 10 * k, 0)).save(tmp_path / f"p{k}.png")
    files = load_image_set(str(tmp_path / "*.png"), loaded)
    assert files.images.shape == (2, 3, 64, 64) and files.names == ["p0.png", "p1.png"]
    digits = load_image_set("decoy-digits:test", loaded, n=5)  # grey 28 px -> the model's 3 x 64 px
    assert digits.images.shape == (5, 3, 64, 64) and digits.extras["decoy_mask"].shape == (5, 64, 64)
    assert evaluation_spec("decoy-digits:train") == "decoy-digits:test" and evaluation_spec("photos") is None
    with pytest.raises(XgirError, match="no image files match"):
        load_image_set(str(tmp_path / "*.jpg"), loaded)
    with pytest.raises(XgirError, match="unknown dataset or image file"):
        load_image_set("nope:train", loaded)


# ---- issue 20, item 6: no 500, costs bounded, a read-only store, a quick restart ---------------
def test_hostile_requests_are_4xx_with_one_line(client, state):
    huge = "99999999999999999999"
    assert "not a class index" in one_line_error(client.get(f"/api/images?cls={huge}"), 400)
    r = client.get(f"/?cls={huge}", headers={"Accept": "text/html"})
    assert r.status_code == 400 and "Traceback" not in r.text
    for query, message in (("method=ig&p.n_steps=-1", "p.n_steps=-1: ig must be at least 1"),
                           ("method=ig&p.n_steps=.nan", "p.n_steps=nan: ig needs a whole number"),
                           ("method=occlusion&p.stride=-1", "p.stride=-1: occlusion must be at least 1"),
                           ("method=occlusion&p.window=0", "p.window=0: occlusion must be at least 1")):
        assert message in one_line_error(client.get(f"/api/images/1/explain.png?{query}"), 400)
    h, w = state.images.height, state.images.width
    inf_mask = "[" + ",".join(["[" + ",".join(["1e400"] * w) + "]"] * h) + "]"
    big_int_mask = "[" + ",".join(["[" + ",".join(["9" * 400] * w) + "]"] * h) + "]"
    for mask in (inf_mask, big_int_mask):
        assert "0 and 1" in one_line_error(client.post("/api/images/1/feedback",
                                                       content='{"irrelevant": ' + mask + "}"), 400)
    deep = "[" * 100_000 + "]" * 100_000
    for url in ("/api/images/1/feedback", "/api/finetune"):
        assert "nested too deeply" in one_line_error(client.post(url, content=deep), 400)
    # an annotator name with a newline is not merged with the name alone
    assert "annotator" in one_line_error(client.post("/api/images/1/feedback", json={"annotator": "bob\n"}), 400)


def test_explanation_cost_is_bounded_as_on_the_cli(client):
    start = time.perf_counter()
    err = one_line_error(client.get("/api/images/2/explain.png?method=ig&p.n_steps=1000000000"), 400)
    assert "p.n_steps=1000000000: ig takes at most 10000" in err and time.perf_counter() - start < 5
    assert "the app takes at most 200 (4x the default 50)" in one_line_error(
        client.get("/api/images/2/explain.png?method=ig&p.n_steps=201"), 400)
    assert "window positions" in one_line_error(
        client.get("/api/images/2/explain.png?method=occlusion&p.window=1&p.stride=1"), 400)
    assert client.get("/api/images/2/explain.png?method=ig&p.n_steps=200").status_code == 200


def test_a_read_only_feedback_store_refuses_saves_and_loses_nothing(state, monkeypatch):
    import sqlite3

    from xgir.app.server import create_app
    from xgir.correct.feedback import store as store_module

    good = np.zeros((state.images.height, state.images.width), int)
    good[:3, :3] = 1
    with TestClient(create_app(state), base_url=BASE) as c:
        assert c.post("/api/images/5/feedback", json={"irrelevant": good.tolist()}).status_code == 200
        before = c.get("/api/images/5/feedback").json()
        connect = sqlite3.connect  # the store opened read-only, as a file without write permission is
        monkeypatch.setattr(store_module.sqlite3, "connect",
                            lambda path, **kw: connect(f"file:{path}?mode=ro", uri=True, **kw))
        for i in (5, 6):
            err = one_line_error(c.post(f"/api/images/{i}/feedback", json={"irrelevant": (1 - good).tolist()}), 400)
            assert "is read-only" in err and "nothing was changed" in err
        assert c.get("/api/images/5/feedback").json() == before


def test_the_port_check_takes_a_port_in_time_wait():
    """A restart right after Ctrl-C: the old server's connections leave the port in TIME_WAIT;
    the check binds with SO_REUSEADDR, as uvicorn does, so the port is free again."""
    import socket

    from xgir.cli.webapp import _check_port

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.close()  # the server side closes first: its end of the connection waits in TIME_WAIT
    server.close()
    client.close()
    with socket.socket() as plain:
        try:
            plain.bind(("127.0.0.1", port))
            pytest.skip("no TIME_WAIT left on this system")
        except OSError:
            pass
    _check_port("127.0.0.1", port)


def test_finetune_offers_a_bcos_model_its_explanation(tmp_path):
    """A B-cos checkpoint in the app: the form defaults to Energy on its B-cos contributions, the
    correction runs with them, and before / after show its contribution maps ("B-cos")."""
    from xgir.app import build_state
    from xgir.app.server import create_app
    from xgir.data import load_dataset
    from xgir.models import build_model, save_checkpoint
    from xgir.train import fit_classifier

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    params = {"in_channels": 1, "num_classes": 10, "width": 2}
    model = fit_classifier(build_model("bcos-resnet", **params), load_dataset("decoy-digits", "train", 0, n=64), 1,
                           batch_size=32, progress=False)
    path = save_checkpoint(model, tmp_path / "bcos.pt", "bcos-resnet", params, meta={"image_size": 28})
    state = build_state(str(path), "decoy-digits:train", tmp_path / "fb.db", tmp_path / "out", n=40, eval_n=40,
                        samples=2)
    with TestClient(create_app(state), base_url=BASE) as c:
        page = c.get("/finetune").text
        assert "<option selected>bcos</option>" in page and "<option selected>energy</option>" in page
        for i in (1, 3):
            c.post(f"/api/images/{i}/feedback", json={"irrelevant": mask_of(c, i).astype(int).tolist()})
        r = c.post("/api/finetune", json={"method": "guidance", "epochs": 1, "batch_size": 16})
        assert r.status_code == 202, r.text
        job = wait(c, r.json()["job"])
        assert job["status"] == "done", job
        res = job["result"]
        assert res["params"]["attribution"] == "bcos" and res["params"]["loss"] == "energy" and res["weight"] > 0
        assert {"B-cos", "Grad-CAM"} <= set(res["before"]["overlap"]) and "B-cos" in res["after"]["overlap"]
        assert c.get(f"/api/jobs/{r.json()['job']}/maps/1/after/B-cos.png").status_code == 200
