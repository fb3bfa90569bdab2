"""The HTTP API of `digitlab serve`: good requests read digits right, bad ones get 4xx JSON."""

from __future__ import annotations

import importlib
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

# Skipped where the web extra is missing, but never in CI, which installs it.
fastapi = (pytest.importorskip("fastapi") if not os.environ.get("CI")
           else importlib.import_module("fastapi"))

from fastapi.testclient import TestClient  # noqa: E402

from digitlab.cli import main  # noqa: E402
from digitlab.data.preprocess import normalise_digit  # noqa: E402
from digitlab.errors import SettingsError  # noqa: E402
from digitlab.explain import explain, map_decimals  # noqa: E402
from digitlab.io import load_model  # noqa: E402
from digitlab.predict import predict_images  # noqa: E402
from digitlab.web.app import create_app  # noqa: E402
from digitlab.web.inputs import MAX_PIXELS  # noqa: E402

N = 40  # test digits sent through the API


@pytest.fixture(scope="module")
def client(served_model) -> TestClient:
    return TestClient(create_app(served_model))


@pytest.fixture(scope="module")
def small_limit(served_model) -> TestClient:
    """An app that takes at most 1,000 bytes of body, to test the limit cheaply."""
    return TestClient(create_app(served_model, max_body_bytes=1000))


def encode(image: np.ndarray, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt, **options)
    return buffer.getvalue()


def post_image(client: TestClient, data: bytes, kind: str = "image/png"):
    return client.post("/predict", content=data, headers={"content-type": kind})


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def assert_error(response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    for fragment in fragments:
        assert fragment in body["error"]


# ---------------------------------------------------------------- good requests


def test_png_uploads_of_real_digits_are_read_as_digitlab_predict_reads_them(
    client, served_model, sample, tmp_path
) -> None:
    model, info = load_model(served_model)
    paths = []
    for i in range(N):
        paths.append(tmp_path / f"{i:02d}.png")
        paths[-1].write_bytes(encode(sample.test_images[i]))
    expected = predict_images(model, info, paths)  # the command line's reading of the same files

    labels = []
    for path, cli in zip(paths, expected, strict=True):
        answer = post_image(client, path.read_bytes()).json()
        assert answer["label"] == cli.label
        assert answer["name"] == cli.name
        # float32 sums differ in the last bits between a batch of 40 and one image
        np.testing.assert_allclose(answer["probabilities"], cli.probabilities, atol=1e-6)
        np.testing.assert_array_equal(np.array(answer["input"], dtype=np.uint8), cli.image)
        labels.append(answer["label"])
    assert np.mean(np.array(labels) == sample.test_labels[:N]) > 0.85


def test_prediction_fields(client, sample) -> None:
    answer = post_image(client, encode(sample.test_images[0])).json()
    assert set(answer) == {"label", "name", "probabilities", "min_confidence", "classes", "input"}
    assert answer["min_confidence"] == 0.0
    assert answer["classes"] == list(range(10))
    assert len(answer["probabilities"]) == 10
    assert sum(answer["probabilities"]) == pytest.approx(1.0)
    assert answer["label"] == answer["classes"][int(np.argmax(answer["probabilities"]))]
    seen = np.array(answer["input"])
    assert seen.shape == (28, 28)
    assert seen.min() >= 0
    assert seen.max() == 255  # normalised: the strongest ink is 255


def test_a_dark_on_white_photo_as_jpeg_and_multipart_reads_like_the_png(client, sample) -> None:
    digit = sample.test_images[1]
    page = Image.new("L", (300, 240), 255)
    page.paste(Image.fromarray(255 - digit).resize((168, 168), Image.Resampling.BICUBIC), (90, 30))
    photo = encode(np.asarray(page), "JPEG", quality=90)
    png = post_image(client, encode(digit)).json()
    jpeg = post_image(client, photo, "image/jpeg").json()
    form = client.post("/predict", files={"file": ("photo.jpg", photo, "image/jpeg")}).json()
    assert jpeg["label"] == png["label"] == sample.test_labels[1]
    assert form == jpeg


def test_json_pixels_of_the_model_shape_are_used_as_they_are(client, served_model, sample) -> None:
    model, _info = load_model(served_model)
    digits = sample.test_images[:10]
    expected = model.predict_proba(digits.reshape(10, -1).astype(np.float32) / 255)
    for digit, proba in zip(digits, expected, strict=True):
        answer = client.post("/predict", json={"pixels": digit.tolist()}).json()
        np.testing.assert_array_equal(answer["input"], digit)
        np.testing.assert_allclose(answer["probabilities"], proba, atol=1e-6)


def test_json_pixels_are_normalised_when_asked_or_of_another_shape(client, sample) -> None:
    digit = np.zeros((28, 28), np.uint8)
    digit[2:12, 3:9] = sample.test_images[2][4:24:2, 6:18:2]  # small and off-centre
    asked = client.post("/predict", json={"pixels": digit.tolist(), "normalise": True}).json()
    np.testing.assert_array_equal(asked["input"], normalise_digit(digit))
    big = np.kron(digit, np.ones((3, 2), np.uint8))  # 84x56: not the model's shape
    other = client.post("/predict", json={"pixels": big.astype(float).tolist()}).json()
    np.testing.assert_array_equal(other["input"], normalise_digit(big))


def test_min_confidence_answers_unknown_with_the_probabilities(client, sample) -> None:
    png = encode(sample.test_images[0])
    plain = post_image(client, png).json()
    confidence = max(plain["probabilities"])
    above = client.post(f"/predict?min_confidence={confidence / 2}", content=png,
                        headers={"content-type": "image/png"}).json()
    assert (above["label"], above["min_confidence"]) == (plain["label"], confidence / 2)
    for way in ("query", "form", "json"):
        if way == "query":
            answer = client.post("/predict?min_confidence=1", content=png,
                                 headers={"content-type": "image/png"})
        elif way == "form":
            answer = client.post("/predict", params={"min_confidence": 1},
                                 files={"file": ("digit.png", png, "image/png")})
        else:
            answer = client.post("/predict", json={"pixels": sample.test_images[0].tolist(),
                                                   "normalise": True, "min_confidence": 1})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["label"], body["name"], body["min_confidence"]) == (None, "unknown", 1.0)
        np.testing.assert_allclose(body["probabilities"], plain["probabilities"], atol=1e-6)


@pytest.mark.parametrize(
    ("url", "body", "fragment"),
    [
        ("/predict?min_confidence=1.5", None, "min_confidence: Input should be less than or equal to 1"),
        ("/predict?min_confidence=-0.1", None, "min_confidence: Input should be greater than or equal to 0"),
        ("/predict?min_confidence=nan", None, "min_confidence: Input should be a finite number"),
        ("/predict?min_confidence=high", None, "min_confidence: Input should be a valid number"),
        ("/predict", {"min_confidence": 2}, "min_confidence: Input should be less than or equal to 1"),
        ("/predict?min_confidence=0.5", {"min_confidence": 0.9},
         "min_confidence given twice, 0.5 in the query and 0.9 in the body: give one"),
        ("/predict?explain=maybe", None, "explain: Input should be a valid boolean"),
        ("/predict", {"explain": "yes"}, "explain: Input should be a valid boolean"),
        ("/predict?explain=true", {"explain": False},
         "explain given twice, true in the query and false in the body: give one"),
    ],
)
def test_bad_options_are_one_line_422(client, sample, url, body, fragment) -> None:
    if body is None:
        answer = client.post(url, content=encode(sample.test_images[0]),
                             headers={"content-type": "image/png"})
    else:
        answer = client.post(url, json={"pixels": sample.test_images[0].tolist(), **body})
    assert answer.status_code == 422
    assert fragment in answer.json()["error"]
    assert "\n" not in answer.json()["error"]


def drawn_seven() -> bytes:
    """A 7 drawn on the page's 280x280 pad (white ink on black), as the page sends it."""
    pad = Image.new("L", (280, 280), 0)
    ImageDraw.Draw(pad).line([(80, 60), (205, 60), (130, 240)], fill=255, width=20)
    return encode(np.asarray(pad))


def test_explain_answers_why_with_a_map_of_what_the_model_saw(client, served_model) -> None:
    plain = post_image(client, drawn_seven()).json()
    asked = client.post("/predict?explain=true", content=drawn_seven(),
                        headers={"content-type": "image/png"}).json()
    why = asked.pop("explanation")
    assert asked == plain  # the rest of the answer is the same
    assert set(why) == {"method", "map"}
    assert why["method"] == "gradient-x-input"  # explain()'s choice for an MLP
    seen = np.array(asked["input"])
    attribution = np.array(why["map"], dtype=np.float64)
    assert attribution.shape == seen.shape == (28, 28)
    assert np.isfinite(attribution).all()
    assert np.abs(attribution).max() > 0
    # The map of the image the model saw, row by row as `input`: gradient x input is 0 off the
    # ink, so a transposed or flipped map would show here.
    assert np.all(attribution[seen == 0] == 0)
    model, _info = load_model(served_model)
    expected = explain(model, seen[None].astype(np.float32) / 255)[0]
    np.testing.assert_allclose(attribution, expected, rtol=0, atol=1e-3 * np.abs(expected).max())


def test_explain_comes_every_way_a_digit_does_and_only_when_asked(client, sample) -> None:
    png = encode(sample.test_images[0])
    by_query = client.post("/predict?explain=true", content=png,
                           headers={"content-type": "image/png"}).json()
    by_form = client.post("/predict", params={"explain": "true"},
                          files={"file": ("digit.png", png, "image/png")}).json()
    by_json = client.post("/predict", json={"pixels": by_query["input"], "explain": True}).json()
    assert by_query["explanation"] == by_form["explanation"] == by_json["explanation"]
    old_fields = {"label", "name", "probabilities", "min_confidence", "classes", "input"}
    for answer in (client.post("/predict?explain=false", content=png,
                               headers={"content-type": "image/png"}).json(),
                   client.post("/predict", json={"pixels": by_query["input"], "explain": False}).json(),
                   client.post("/predict", json={"pixels": by_query["input"]}).json()):
        assert set(answer) == old_fields  # no "explanation": null either


def test_explain_works_for_a_model_without_gradients(sample, tmp_path) -> None:
    from digitlab.io import save_model
    from digitlab.models import Template

    path = tmp_path / "template.safetensors"
    save_model(path, Template().fit(sample.features("train"), sample.train_labels),
               input_shape=sample.image_shape, class_names=sample.class_names)
    answer = TestClient(create_app(path)).post(
        "/predict?explain=true", content=drawn_seven(), headers={"content-type": "image/png"}).json()
    attribution = np.array(answer["explanation"]["map"])
    assert answer["explanation"]["method"] == "occlusion"
    assert attribution.shape == (28, 28)
    assert np.isfinite(attribution).all()
    assert attribution.max() > 0  # some ink supported the answer


@pytest.mark.parametrize(("peak", "decimals"), [(0.5, 4), (3.0, 4), (0.012, 5), (2e-6, 9), (0.0, 4)])
def test_maps_keep_four_significant_digits_of_their_peak(peak, decimals) -> None:
    attribution = np.array([[peak, -peak / 3], [0.0, peak / 7]])
    assert map_decimals(attribution) == decimals
    assert map_decimals(-attribution) == decimals


def test_the_servers_min_confidence_is_the_default(served_model, sample) -> None:
    strict = TestClient(create_app(served_model, min_confidence=1.0))
    assert strict.get("/model").json()["min_confidence"] == 1.0
    answer = post_image(strict, encode(sample.test_images[0])).json()
    assert (answer["label"], answer["name"]) == (None, "unknown")
    lenient = strict.post("/predict?min_confidence=0", content=encode(sample.test_images[0]),
                          headers={"content-type": "image/png"}).json()
    assert lenient["label"] == sample.test_labels[0]
    with pytest.raises(SettingsError, match="min_confidence must be a number from 0 to 1"):
        create_app(served_model, min_confidence=1.5)


def test_health_model_and_report(client, served_model) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    about = client.get("/model").json()
    metrics = json.loads((served_model.parent / "metrics.json").read_text())
    assert about == {"kind": "mlp", "classes": list(range(10)), "class_names": [str(d) for d in range(10)],
                     "input_shape": [28, 28], "task": "all",
                     "test_accuracy": metrics["test"]["accuracy"], "provenance": None,
                     "temperature": 1.0, "min_confidence": 0.0, "preprocessing": {}}
    report = client.get("/report")
    assert report.status_code == 200
    assert report.headers["content-type"].startswith("text/html")
    assert report.text == (served_model.parent / "report.html").read_text()


def test_without_metrics_or_report_beside_the_model(served_model, tmp_path) -> None:
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes(served_model.read_bytes())
    client = TestClient(create_app(lone))
    assert client.get("/model").json()["test_accuracy"] is None  # nothing stored in the file either
    assert_error(client.get("/report"), 404, "no report.html beside lone.safetensors")


def test_the_page_loads_everything_from_this_server(client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for needed in ('id="pad"', 'id="clear"', 'id="label"', 'id="bars"', 'id="seen"', 'id="why"',
                   "report-frame"):
        assert needed in page.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sorted(assets) == ["/static/app.js", "/static/favicon.svg", "/static/style.css"]
    for asset in assets:
        served = client.get(asset)
        assert served.status_code == 200
        # (the SVG's xmlns is a name, not a place to load from)
        text = served.text.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert not re.search(r"https?://", text), f"{asset} names another host"


def test_openapi_describes_every_way_to_send_a_digit(client) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/health", "/model", "/report"} <= set(schema["paths"])
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert set(body) == {"image/png", "image/jpeg", "multipart/form-data", "application/json"}
    assert client.get("/docs").status_code == 404  # its scripts come from a CDN: not served


# ---------------------------------------------------------------- bad requests


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("kind", "make", "status", "fragment"),
    [
        ("image/png", lambda d: b"", 400, "empty body"),
        ("image/jpeg", lambda d: b"", 400, "empty body"),
        ("image/png", lambda d: b"hello, not a picture", 422, "not a PNG or JPEG image"),
        ("image/png", lambda d: encode(d, "GIF"), 422, "not a PNG or JPEG image"),
        ("image/png", lambda d: truncated(encode(d)), 422, "truncated or corrupt"),
        ("image/jpeg", lambda d: truncated(encode(d, "JPEG")), 422, "truncated or corrupt"),
        ("image/png", lambda d: encode(np.zeros((280, 280), np.uint8)), 422, "blank"),
        ("image/png", lambda d: encode(np.full((280, 280), 255, np.uint8)), 422, "blank"),
        ("image/png", lambda d: png_claiming(50_000, 50_000), 422, "decompression bomb"),
        ("image/png", lambda d: png_claiming(4097, 4096), 422, f"more than {MAX_PIXELS:,} pixels"),
        ("text/plain", lambda d: b"7", 415, "'text/plain' is not accepted"),
        ("image/gif", lambda d: encode(d, "GIF"), 415, "'image/gif' is not accepted"),
        ("", lambda d: encode(d), 415, "no content type"),
    ],
)
def test_bad_pictures(client, sample, kind, make, status, fragment) -> None:
    response = client.post("/predict", content=make(sample.test_images[0]),
                           headers={"content-type": kind} if kind else {})
    assert_error(response, status, fragment)


def test_a_real_decompression_bomb_is_refused_before_decoding(client) -> None:
    bomb = encode(np.zeros((4100, 4100), np.uint8))  # 17 megapixels in a few kilobytes
    assert len(bomb) < 100_000
    assert_error(post_image(client, bomb), 422, "refusing a 4100x4100 image")


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"", 400, "empty body"),
        (b'{"pixels": [[0, 1]', 400, "malformed JSON"),
        (b"not json", 400, "malformed JSON"),
        (b"[[0, 1], [2, 3]]", 422, "bad JSON body: body: Input should be an object"),
        (b"{}", 422, "pixels: Field required"),
        (b'{"pixels": [[0]], "normalize": true}', 422, "normalize: Extra inputs are not permitted"),
        (b'{"pixels": []}', 422, "pixels: List should have at least 1 item"),
        (b'{"pixels": [[]]}', 422, "pixels.0: List should have at least 1 item"),
        (b'{"pixels": [0, 1, 2]}', 422, "pixels.0: Input should be a valid array"),
        (b'{"pixels": [[[0]]]}', 422, "pixels.0.0: Input should be a valid number"),
        (b'{"pixels": [[0, 1], [2]]}', 422, "rows of different lengths"),
        (b'{"pixels": [[NaN]]}', 422, "finite number"),
        (b'{"pixels": [[Infinity]]}', 422, "finite number"),
        (b'{"pixels": [[1e400]]}', 422, "finite number"),
        (b'{"pixels": [[-1]]}', 422, "greater than or equal to 0"),
        (b'{"pixels": [[256]]}', 422, "less than or equal to 255"),
        (b'{"pixels": [["12"]]}', 422, "valid number"),
        (b'{"pixels": [[true]]}', 422, "valid number"),
        (b'{"pixels": [[0]], "normalise": "yes"}', 422, "normalise: Input should be a valid boolean"),
        (json.dumps({"pixels": np.zeros((28, 28)).tolist(), "normalise": True}).encode(), 422, "blank"),
        (json.dumps({"pixels": np.zeros((2, 1025)).tolist()}).encode(), 422, "at most 1024"),
    ],
)
def test_bad_json(client, body, status, fragment) -> None:
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert_error(response, status, fragment)


def test_pixel_errors_are_summed_up_in_one_line(client) -> None:
    response = client.post("/predict", json={"pixels": [[300] * 28] * 28})
    assert_error(response, 422, "pixels.0.0: Input should be less than or equal to 255",
                 "(and 781 more)")


@pytest.mark.parametrize(
    ("send", "status", "fragment"),
    [
        (lambda c: c.post("/predict", files={"picture": ("d.png", b"x", "image/png")}), 422,
         "no field 'file'"),
        (lambda c: c.post("/predict", data={"file": "not a file"},
                          files={"other": ("x.txt", b"x", "text/plain")}), 422, "must be a file"),
        (lambda c: c.post("/predict", files={"file": ("d.png", b"", "image/png")}), 400,
         "uploaded file is empty"),
        (lambda c: c.post("/predict", files={"file": ("d.txt", b"plain text", "text/plain")}), 422,
         "not a PNG or JPEG image"),
        (lambda c: c.post("/predict", content=b"--x\r\n",
                          headers={"content-type": "multipart/form-data"}), 400, "boundary"),
        (lambda c: c.get("/predict"), 405, "Method Not Allowed"),
        (lambda c: c.get("/nowhere"), 404, "Not Found"),
    ],
)
def test_bad_uploads_and_routes(client, send, status, fragment) -> None:
    assert_error(send(client), status, fragment)


def test_bodies_over_the_limit_are_refused_while_read(small_limit, sample) -> None:
    png = encode(sample.test_images[0])  # a few hundred bytes: fits
    assert post_image(small_limit, png).status_code == 200
    big = encode(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
    assert len(big) > 1000
    limit = "larger than the limit of 1,000 bytes"
    assert_error(post_image(small_limit, big), 413, limit)  # Content-Length says so up front
    chunks = (big[i : i + 256] for i in range(0, len(big), 256))  # chunked: no length declared
    assert_error(small_limit.post("/predict", content=chunks, headers={"content-type": "image/png"}),
                 413, limit)
    assert_error(small_limit.post("/predict", files={"file": ("big.png", big, "image/png")}), 413, limit)
    pixels = {"pixels": np.zeros((28, 28)).tolist()}
    assert_error(small_limit.post("/predict", json=pixels), 413, limit)


def test_unexpected_errors_are_json_500s(served_model) -> None:
    app = create_app(served_model)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    response = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert_error(response, 500, "internal error (RuntimeError)")


# ---------------------------------------------------------------- the command


def test_serve_help_shows_every_default(capsys) -> None:
    assert main(["serve", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: 127.0.0.1)", "(default: 8000)", "(default: 2000000)"):
        assert default in text


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["serve", "missing.safetensors"], "missing.safetensors: cannot read: No such file"),
        (["serve", "{model}", "--host", "256.1.1.1"], "cannot listen on 256.1.1.1:8000"),
        (["serve", "{model}", "--min-confidence", "1.5"],
         "argument --min-confidence: expected a number from 0 to 1, got '1.5'"),
    ],
)
def test_serve_errors_are_one_line_exit_2(served_model, capsys, argv, fragment) -> None:
    argv = [arg.format(model=served_model) for arg in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert err.strip().count("\n") == 0


def test_serve_without_the_web_extra_is_one_line_exit_2(served_model) -> None:
    code = ("import sys; sys.modules['fastapi'] = None; from digitlab.cli import main; "
            f"sys.exit(main(['serve', {str(served_model)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 2
    assert "needs the web extra (fastapi is missing): pip install 'digitlab[web]'" in done.stderr
    assert done.stderr.strip().count("\n") == 0


def test_the_command_line_starts_without_importing_fastapi() -> None:
    code = ("import sys, digitlab.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('fastapi', 'starlette', 'uvicorn') if m in sys.modules))")
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, timeout=60).stdout.strip()
    assert printed == "[]"


def test_serve_answers_on_127_0_0_1_until_ctrl_c(served_model, serve_command, tmp_path) -> None:
    import httpx

    with serve_command(served_model, tmp_path) as (process, url):
        assert url.startswith("http://127.0.0.1:")  # the default host: this machine only
        assert httpx.get(url + "health", timeout=10).json() == {"status": "ok"}
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0  # Ctrl-C is how a server stops: not an error
    assert "Traceback" not in (tmp_path / "serve-stderr.txt").read_text()


def worker_pids(pid: int) -> set[int]:
    """The spawned worker processes of ``pid`` (Linux's /proc), not multiprocessing's
    resource tracker, which is a child too."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(child) for child in children
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()}


def test_serve_workers_answer_as_one_process_does(
    served_model, serve_command, client, sample, tmp_path
) -> None:
    """`serve --workers 2`: two processes share the port, and page and API answer as the
    app in this one process does."""
    workers = 2
    import httpx

    drawings = [encode(np.kron(digit, np.ones((10, 10), dtype=np.uint8)))  # 280x280, as the page
                for digit in sample.test_images[:12]]
    with serve_command(served_model, tmp_path, "--workers", str(workers)) as (process, url):
        with httpx.Client(base_url=url, timeout=60) as http:
            assert http.get("/health").json() == {"status": "ok"}  # waits for a worker to be up
            for path in ("/", "/model"):
                here, there = client.get(path), http.get(path)
                assert (there.status_code, there.content) == (here.status_code, here.content)
            for drawing in drawings:
                here = post_image(client, drawing)
                there = http.post("/predict", content=drawing, headers={"content-type": "image/png"})
                assert there.status_code == here.status_code == 200
                assert there.json() == here.json()
            bad = http.post("/predict", content=b"not a picture", headers={"content-type": "image/png"})
            assert bad.status_code == 422
            assert bad.json() == post_image(client, b"not a picture").json()
        if sys.platform == "linux":
            assert len(worker_pids(process.pid)) == workers
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    assert "Traceback" not in (tmp_path / "serve-stderr.txt").read_text()


@pytest.mark.skipif(sys.platform != "linux", reason="Linux's SO_REUSEPORT spreads connections")
def test_serve_workers_each_take_connections(served_model, serve_command, tmp_path) -> None:
    """50 connections opened at once are spread over the workers, not all taken by the
    first to wake (each worker listens on its own socket of one port-sharing group)."""
    with serve_command(served_model, tmp_path, "--workers", "2") as (process, url):
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        workers = worker_pids(process.pid)
        # All connected before any is accepted, as when 50 clients start together: the
        # workers are paused meanwhile (the kernel completes the connections alone).
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        try:
            clients = [socket.create_connection(("127.0.0.1", port), timeout=60)
                       for _ in range(50)]
        finally:
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
        try:
            for client in clients:  # each asks on its keep-alive connection
                client.sendall(b"GET /health HTTP/1.1\r\nhost: test\r\n\r\n")
            for client in clients:
                assert client.recv(4096).startswith(b"HTTP/1.1 200 ")
            taken = {pid: len(_sockets_on(pid, port)) for pid in workers}
            listening = [_sockets_on(pid, port, state="0A") for pid in workers]
        finally:
            for client in clients:
                client.close()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    assert sum(taken.values()) == 50
    assert min(taken.values()) >= 5, taken  # 50 at random: fewer than 5 is 1 in 10^9
    # A listening socket each, not one shared (the first to wake would take every waiting one).
    assert [len(own) for own in listening] == [1, 1]
    assert listening[0] != listening[1]


def _sockets_on(pid: int, port: int, state: str = "01") -> set[str]:
    """The inodes of the TCP sockets on ``port`` in ``state`` that process ``pid`` holds
    (Linux's /proc: 01 established, 0A listening)."""
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            held.add(str(fd.readlink()).removeprefix("socket:[").removesuffix("]"))
        except OSError:  # closed meanwhile
            continue
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state \
                    and fields[9] in held:
                found.add(fields[9])
    return found


def test_a_shared_port_is_still_refused_when_busy() -> None:
    """Workers share their port with each other, never with another server."""
    from digitlab.errors import DigitlabError
    from digitlab.web.server import listen, worker_sockets

    with listen("127.0.0.1", 0, shared=True) as first:
        port = first.getsockname()[1]
        for shared in (True, False):
            with pytest.raises(DigitlabError, match=f"cannot listen on 127.0.0.1:{port}"):
                listen("127.0.0.1", port, shared=shared)
        others = worker_sockets(first, 3)
        try:
            assert [s.getsockname() for s in others] == [first.getsockname()] * 3
        finally:
            for sock in others[1:]:
                sock.close()


def test_serve_refuses_fewer_than_one_worker(served_model, capsys) -> None:
    assert main(["serve", str(served_model), "--workers", "0"]) == 2
    assert "--workers must be at least 1, got 0" in capsys.readouterr().err


# The model file is removed after `digitlab serve` has checked it and before its workers
# load it: each worker fails to start, as it would on any DataError of its own.
_WORKERS_FAIL = """
import pathlib, sys
import digitlab.web.server as server
real = server.run_workers
def run_workers(*args, **kwargs):
    pathlib.Path(sys.argv[1]).unlink()
    return real(*args, **kwargs)
server.run_workers = run_workers
from digitlab.cli import main
sys.exit(main(["serve", sys.argv[1], "--port", "0", "--workers", "2"]))
"""


def test_serve_workers_that_cannot_start_are_one_line_exit_2(served_model, tmp_path) -> None:
    model = tmp_path / "model.safetensors"
    model.write_bytes(served_model.read_bytes())
    done = subprocess.run([sys.executable, "-c", _WORKERS_FAIL, str(model)], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 2
    assert "serving" not in done.stdout  # never announced
    assert "a serve worker could not start: " in done.stderr
    assert "model.safetensors: cannot read: No such file" in done.stderr
    assert done.stderr.strip().count("\n") == 0


def test_serve_workers_on_an_older_uvicorn_is_one_line(monkeypatch) -> None:
    """Without uvicorn's readiness wait (before 0.54) `serve --workers` says what to install."""
    import uvicorn.supervisors.multiprocess

    from digitlab.errors import DigitlabError
    from digitlab.web.server import run_workers

    monkeypatch.delattr(uvicorn.supervisors.multiprocess.Process, "wait_until_ready")
    announced = []
    with socket.socket() as sock, pytest.raises(DigitlabError, match=r"needs uvicorn 0\.54 or newer"):
        run_workers(create_app, sock, 2, ready=lambda: announced.append(True))
    assert announced == []


def test_the_web_extra_asks_for_the_uvicorn_serve_needs() -> None:
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    from digitlab.web.server import UVICORN_FLOOR

    extra = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())[
        "project"]["optional-dependencies"]["web"]
    uvicorn = next(Requirement(text) for text in extra if Requirement(text).name == "uvicorn")
    assert str(uvicorn.specifier) == f">={UVICORN_FLOOR}"


def test_a_deskewed_model_sees_deskewed_pixels(sample, tmp_path) -> None:
    """A model trained with --deskew gets deskewed input from the API too, and shows it."""
    from digitlab.data.deskew import deskew_images, slants
    from digitlab.io import save_model
    from digitlab.models import Template

    upright = sample.map_images(deskew_images, "deskewed")
    model = Template().fit(upright.features("train"), upright.train_labels)
    path = tmp_path / "model.safetensors"
    save_model(path, model, input_shape=(28, 28), preprocessing={"deskew": True})
    leaning = sample.test_images[int(np.argmax(np.abs(slants(sample.test_images[:100]))))]
    answer = TestClient(create_app(path)).post("/predict", json={"pixels": leaning.tolist()})
    assert answer.status_code == 200
    np.testing.assert_array_equal(np.array(answer.json()["input"]), deskew_images(leaning[None])[0])
