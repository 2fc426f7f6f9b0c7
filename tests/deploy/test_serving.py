"""``promptlab serve``: the real LitServe server on a free loopback port, talked to over HTTP, slow and
vanishing clients included; and the checks on where it may listen."""

import base64
import io
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests
import torch
from PIL import Image

from promptlab.cli import main
from promptlab.deploy.classifier import Classifier
from promptlab.deploy.serving import ServeError, check_address
from promptlab.export import export_classifier
from tests.builders import BUILDERS
from tests.fuzz_corpus import corpus

KEY = "test-key"
REQUEST_TIMEOUT_S = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory):
    torch.manual_seed(0)
    return export_classifier(BUILDERS["CoOp"][0]().eval(), tmp_path_factory.mktemp("serve") / "c.safetensors")


def _start_server(classifier_file) -> tuple[subprocess.Popen, str]:
    """A running server of ``classifier_file`` (API key required, dynamic batching) and its base URL."""
    port = _free_port()
    command = [
        sys.executable, "-m", "promptlab", "serve", "--classifier", str(classifier_file), "--port", str(port),
        "--max_batch_size", "8", "--batch_timeout", "0.05", "--accelerator", "cpu",
        "--request_timeout", str(REQUEST_TIMEOUT_S),
    ]  # fmt: skip
    env = os.environ | {"PROMPTLAB_API_KEY": KEY, "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", headers={"X-API-Key": KEY}, timeout=2).text == "ok":
                break
        except requests.ConnectionError:
            pass
        assert process.poll() is None, process.stdout.read()[-3000:]
        time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("the server did not become healthy within 120 s")
    return process, url


def _stop_server(process: subprocess.Popen) -> str:
    """Stops the server with SIGTERM; returns its log once every one of its processes has ended."""
    workers = psutil.Process(process.pid).children(recursive=True)  # LitServe's API and inference processes
    process.terminate()  # SIGTERM must stop them all: none may outlive the server
    process.wait(timeout=30)
    log = process.stdout.read()
    _, alive = psutil.wait_procs(workers, timeout=10)
    for worker in alive:
        worker.kill()
    assert not alive, f"{len(alive)} server process(es) outlived SIGTERM"
    assert "Traceback" not in log, log[-3000:]  # a client that hung up mid-body is one line, never a traceback
    return log


@pytest.fixture(scope="module")
def server(classifier_file):
    """A running server (API key required, dynamic batching); yields its base URL."""
    process, url = _start_server(classifier_file)
    yield url
    log = _stop_server(process)
    # libtiff's own prints for the damaged TIFFs went to a file: one line per image in the server's log
    assert "TIFFReadDirectory" not in log and "its decoders' messages are in" in log, log[-3000:]


def _png(colour=(200, 30, 30), size=(40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _post(url, headers=None, **kwargs):
    return requests.post(f"{url}/predict", headers={"X-API-Key": KEY, **(headers or {})}, timeout=60, **kwargs)


def test_predicts_from_multipart_and_base64_like_the_classifier(server, classifier_file):
    image = _png()
    expected = Classifier.load(classifier_file, device="cpu").predict(Image.open(io.BytesIO(image)), top_k=2)[0]
    for response in (
        _post(server, files={"image": ("red.png", image, "image/png")}, data={"top_k": "2"}),
        _post(server, json={"image": base64.b64encode(image).decode(), "top_k": 2}),
    ):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["label"] == expected.label and abs(body["probability"] - expected.probability) < 1e-5
        assert [t["label"] for t in body["top_k"]] == [name for name, _ in expected.top_k]
        assert body["none_of_these"] is False
    rejected = _post(server, json={"image": base64.b64encode(image).decode(), "reject_below": 0.999})
    assert rejected.status_code == 200 and rejected.json()["none_of_these"] is True


@pytest.mark.slow
@pytest.mark.parametrize("method", ["CoCoOp", "MaPLe", "CLIPLoRA"])
def test_classifiers_that_change_the_encoders_are_served_like_the_others(method, tmp_path):
    """CoCoOp runs the text tower for every image; MaPLe and CLIP-LoRA change the image tower."""
    torch.manual_seed(0)
    classifier_file = export_classifier(BUILDERS[method][0]().eval(), tmp_path / f"{method}.safetensors")
    image = _png((30, 120, 200))
    expected = Classifier.load(classifier_file, device="cpu").predict(Image.open(io.BytesIO(image)), top_k=3)[0]
    process, url = _start_server(classifier_file)
    try:
        response = _post(url, files={"image": ("blue.png", image, "image/png")}, data={"top_k": "3"})
    finally:
        _stop_server(process)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["label"] == expected.label and abs(body["probability"] - expected.probability) < 1e-5


BOMB = io.BytesIO()
Image.new("1", (20000, 10000)).save(BOMB, format="PNG")  # 200 Mpixel in 30 KB

PNG_B64 = base64.b64encode(_png()).decode()
BAD_REQUESTS = {
    "no API key": (dict(json={"image": ""}, headers={"X-API-Key": ""}), 401, "no API key"),
    "wrong API key": (dict(json={"image": ""}, headers={"X-API-Key": "nope"}), 401, "wrong API key"),
    "not an image": (dict(files={"image": ("notes.png", b"hello")}), 400, "Cannot read image 'notes.png'"),
    "truncated image": (dict(files={"image": ("cut.png", _png()[:60])}), 400, "Cannot read image 'cut.png'"),
    "decompression bomb": (dict(files={"image": ("bomb.png", BOMB.getvalue())}), 400, "Cannot read image 'bomb.png'"),
    "too large": (dict(files={"image": ("big.png", b"0" * (21 * 2**20))}), 413, "20 MB"),
    "missing field": (dict(json={"picture": "abc"}), 400, "has no image"),
    "image as a text field": (dict(data={"image": "abc"}, files={"other": ("x", b"x")}), 400, "not a file"),
    "bad base64": (dict(json={"image": "%%%not base64%%%"}), 400, "not valid base64"),
    "not JSON": (dict(data=b"{broken", headers={"Content-Type": "application/json"}), 400, "not valid JSON"),
    "other content type": (dict(data=b"x", headers={"Content-Type": "text/plain"}), 415, "not accepted"),
    "bad top_k": (dict(json={"image": PNG_B64, "top_k": "many"}), 400, "top_k"),
    "bad reject_below": (dict(json={"image": PNG_B64, "reject_below": 2}), 400, "reject_below"),
    "two images": (dict(files=[("image", ("a.png", _png())), ("image", ("b.png", _png()))]), 400, "2 parts named"),
    "5,000 fields": (dict(files={"image": ("a.png", _png())}, data={f"f{i}": "x" for i in range(5000)}), 400, "fields"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_a_one_sentence_4xx_and_the_server_stays_up(server, case):
    kwargs, status, words = BAD_REQUESTS[case]
    response = _post(server, **kwargs)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert words in detail and detail.count(". ") == 0, detail  # one sentence
    assert _post(server, files={"image": ("ok.png", _png())}).status_code == 200


def test_damaged_tiffs_are_refused_one_by_one(server):
    damaged = {name: data for name, data in corpus().items() if name.endswith(".tif") and "-cut" in name}
    for name, data in damaged.items():
        response = _post(server, files={"image": (name, data)})
        assert response.status_code in (200, 400), response.text
    assert _post(server, files={"image": ("ok.png", _png())}).status_code == 200


def test_a_bad_image_in_a_batch_does_not_fail_the_good_ones(server):
    good = {"files": {"image": ("ok.png", _png((30, 200, 30)))}}
    bad = {"files": {"image": ("bad.png", b"garbage")}}
    with ThreadPoolExecutor(16) as pool:  # 16 at once: batches of up to 8 mix good and bad requests
        responses = list(pool.map(lambda kwargs: _post(server, **kwargs), [good, bad] * 8))
    assert [r.status_code for r in responses] == [200, 400] * 8
    assert len({r.json()["label"] for r in responses[::2]}) == 1


def _slow_client(port: int, head: bytes) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port))
    client.sendall(head)
    return client


def _closed_by_server(client: socket.socket) -> bool:
    client.settimeout(0.2)
    try:
        return client.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


def test_slow_clients_are_closed_and_normal_requests_answered_meanwhile(server):
    port = int(server.rsplit(":", 1)[1])
    started = time.monotonic()
    half_headers = [_slow_client(port, b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Slow: ") for _ in range(20)]
    half_bodies = [
        _slow_client(port, b"POST /predict HTTP/1.1\r\nHost: x\r\nX-API-Key: test-key\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"image\": \"")
        for _ in range(5)
    ]  # fmt: skip
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]  # connected, sending nothing
    slow = half_headers + half_bodies + idle
    for _ in range(4):  # one byte a second keeps no connection alive past the deadline
        assert _post(server, files={"image": ("ok.png", _png())}).status_code == 200
        for client in half_headers:
            client.send(b"a")
        time.sleep(0.5)
    deadline = started + REQUEST_TIMEOUT_S + 5
    while time.monotonic() < deadline and not all(_closed_by_server(c) for c in slow):
        time.sleep(0.2)
    closed = sum(_closed_by_server(c) for c in slow)
    for client in slow:
        client.close()
    assert closed == len(slow), f"{len(slow) - closed} of {len(slow)} slow connections still open"
    assert _post(server, files={"image": ("ok.png", _png())}).status_code == 200


def test_a_client_hanging_up_mid_body_leaves_the_server_answering(server):
    port = int(server.rsplit(":", 1)[1])
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nX-API-Key: test-key\r\nContent-Length: 100000\r\n\r\n"
    for _ in range(3):
        _slow_client(port, head + b"x" * 1000).close()
    assert _post(server, files={"image": ("ok.png", _png())}).status_code == 200


def _port_in_use():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


@pytest.mark.parametrize(
    ("host", "port", "key", "words"),
    [
        ("127.0.0.1", 8000, "", "The API key is empty"),
        ("127.0.0.1", 8000, "   ", "The API key is empty"),
        ("0.0.0.0", 8000, None, "--insecure"),
        ("::", 8000, None, "--insecure"),
        ("192.168.1.10", 8000, KEY, "cannot be bound"),
        ("127.0.0.1", 0, None, "--port must be from 1024 to 65535 (got 0)"),
        ("127.0.0.1", 70000, None, "--port must be"),
    ],
)
def test_where_the_server_may_listen(host, port, key, words):
    with pytest.raises(ServeError, match=re.escape(words)):
        check_address(host, port, key)


def test_a_port_in_use_and_the_network_without_a_key_are_said_plainly():
    with _port_in_use() as holder, pytest.raises(ServeError, match="cannot be used"):
        check_address("127.0.0.1", holder.getsockname()[1], None)
    port = _free_port()
    assert check_address("localhost", port, None) == ("127.0.0.1", [])
    host, warnings = check_address("0.0.0.0", port, None, insecure=True)
    assert host == "0.0.0.0" and "WITHOUT AN API KEY" in warnings[0] and "TLS" in warnings[1]
    assert check_address("0.0.0.0", port, KEY)[1] == [warnings[1]]


def test_serve_refuses_an_unset_key_variable_in_one_sentence(capsys, classifier_file, monkeypatch):
    monkeypatch.setenv("PROMPTLAB_API_KEY", "")
    assert main(["serve", "--classifier", str(classifier_file), "--port", str(_free_port())]) == 2
    assert capsys.readouterr().err.count("The API key is empty") == 1
