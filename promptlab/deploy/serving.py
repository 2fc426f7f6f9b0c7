"""``promptlab serve``: an exported classifier behind an HTTP endpoint, on LitServe.

Endpoints (JSON in and out; every error is ``{"detail": "<one sentence>"}`` with a 4xx status):

    POST /predict   an image as a multipart upload (field ``image``) or JSON ``{"image": "<base64>"}``;
                    optional ``top_k``, ``reject_below`` and ``unfamiliar_below`` (form fields or JSON keys).
                    -> {"label", "probability", "none_of_these", "rejected_by", "familiarity",
                        "top_k": [{"label", "probability"}...]}
    GET  /health    "ok" once the model is loaded

Connections first meet a request deadline (:mod:`promptlab.deploy.http_timeouts`) and uvicorn's
connection limit (:func:`run_server`). Requests then pass two layers. :class:`RequestGate`, an ASGI
middleware in the HTTP process, checks the API key, the body size and the request's shape (one image,
a few form fields), and hands LitServe one canonical JSON body; a request it refuses never reaches
the model. :class:`ClassifierAPI`, in LitServe's inference worker, decodes
the images (the app's checks: 20 MB, the decompression-bomb guard), batches them dynamically
(``max_batch_size`` / ``batch_timeout``) and predicts. An image that fails to decode is refused on
its own: the other requests of its batch are answered normally.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import os
import signal
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import litserve as ls
import numpy as np
import psutil
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from typing_extensions import override

from promptlab.data.images import ImageLoadError, decode_image_bytes
from promptlab.deploy.file_format import ClassifierFormat, classifier_format
from promptlab.deploy.http_timeouts import protocol_with_request_timeout
from promptlab.deploy.native_stderr import keep_decoder_messages_in
from promptlab.deploy.prediction import check_reject_below, check_unfamiliar_below, rank
from promptlab.errors import UserError

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 20 * 1024 * 1024  # as the app's uploads (.streamlit/config.toml)
MAX_BODY_BYTES = MAX_IMAGE_BYTES * 4 // 3 + 64 * 1024  # the image in base64, plus a little JSON
API_KEY_HEADER = "X-API-Key"
API_KEY_ENV = "PROMPTLAB_API_KEY"
LOOPBACK_HOSTS = {"127.0.0.1": "127.0.0.1", "localhost": "127.0.0.1"}
NETWORK_HOSTS = ("0.0.0.0", "::")  # every interface: the only other addresses LitServe binds
MAX_FORM_PARTS = 16  # of each kind (files, text fields): a form needs three


class ServeError(UserError):
    """The server cannot start as asked; the message names the option and the fix."""


@dataclass
class Refusal:
    """A request that cannot be answered: its HTTP status and one sentence."""

    status: int
    detail: str


def _refuse(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


class RequestGate:
    """ASGI middleware in front of LitServe: API key, body size and request shape, checked before a
    request reaches the model (LitServe itself would answer a malformed body with a 500).

    Passes ``POST /predict`` on as JSON ``{"image": base64, "name": str, "top_k": int,
    "reject_below": float | None, "unfamiliar_below": float | None}``.

    Args:
        app: the LitServe FastAPI app.
        api_key: the key every request must send in ``X-API-Key`` (None: no key needed).
    """

    def __init__(self, app: ASGIApp, api_key: str | None = None, predict_path: str = "/predict") -> None:
        self.app, self.api_key, self.predict_path = app, api_key, predict_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point: a request is checked here before the application sees it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.api_key is not None:
            sent = Request(scope).headers.get(API_KEY_HEADER, "")
            if not hmac.compare_digest(sent.encode(), self.api_key.encode()):
                what = "a wrong" if sent else "no"
                await _refuse(
                    401, f"The request has {what} API key; send the server's key in the {API_KEY_HEADER} header."
                )(scope, receive, send)
                return
        if scope["path"] != self.predict_path or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        result = await self._canonical_body(scope, receive)
        if isinstance(result, Refusal):
            await _refuse(result.status, result.detail)(scope, receive, send)
            return
        body = json.dumps(result).encode()
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        sent_body = False

        async def replay() -> Message:
            nonlocal sent_body
            if sent_body:
                return await receive()  # http.disconnect, when the client goes away
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app({**scope, "headers": headers}, replay, send)

    async def _canonical_body(self, scope: Scope, receive: Receive) -> dict | Refusal:
        request = Request(scope, receive)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return Refusal(413, f"The request is {int(declared) / 2**20:.1f} MB; images up to 20 MB are accepted.")
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    return Refusal(413, "The request is larger than 20 MB of image; send a smaller image.")
                chunks.append(chunk)
        except ClientDisconnect:  # nobody to answer: one line in the log, not a traceback
            log.info("A client hung up before sending its whole request (%s bytes of it arrived).", size)
            return Refusal(499, "The client closed the connection.")
        raw = b"".join(chunks)
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            fields = await _multipart_fields(scope, raw)
        elif content_type.startswith("application/json") or not content_type:
            try:
                fields = json.loads(raw or b"null")
            except (ValueError, UnicodeDecodeError):
                return Refusal(
                    400, 'The request body is not valid JSON; send {"image": "<base64>"} or a multipart upload.'
                )
        else:
            return Refusal(415, f"Content type {content_type!r} is not accepted; send multipart/form-data or JSON.")
        if isinstance(fields, Refusal):
            return fields
        return _image_request(fields)


async def _multipart_fields(scope: Scope, raw: bytes) -> dict | Refusal:
    """The form's fields, the uploaded file's content (bytes) and name under ``image`` / ``name``."""

    async def body() -> Message:
        return {"type": "http.request", "body": raw, "more_body": False}

    try:
        form = await Request(scope, body).form(max_files=MAX_FORM_PARTS, max_fields=MAX_FORM_PARTS)
    except (MultiPartException, HTTPException) as error:  # a limit or a malformed part
        # (starlette raises MultiPartException as an HTTPException inside an application)
        message = str(getattr(error, "message", None) or getattr(error, "detail", "")).lower()
        limit = next((kind for kind in ("fields", "files") if f"too many {kind}" in message), None)
        if limit is None:
            return Refusal(400, "The multipart body cannot be parsed; send the image as a file field named 'image'.")
        return Refusal(
            400,
            f"The form has more than {MAX_FORM_PARTS} {'text fields' if limit == 'fields' else 'files'}, the server's "
            "limit; send one file field 'image' and at most the fields top_k, reject_below and unfamiliar_below.",
        )
    except Exception:  # starlette's multipart parser raises several types for a malformed body
        return Refusal(400, "The multipart body cannot be parsed; send the image as a file field named 'image'.")
    images = form.getlist("image")
    if len(images) > 1:
        return Refusal(400, f"The form has {len(images)} parts named 'image'; send one image per request.")
    fields: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
    upload = form.get("image")
    if upload is not None and not isinstance(upload, str):
        fields["image"] = await upload.read()
        fields["name"] = upload.filename or "upload"
    elif isinstance(upload, str):
        fields.pop("image")
        return Refusal(400, "The form field 'image' is text, not a file; upload the image as a file.")
    return fields


def _image_request(fields: Any) -> dict | Refusal:
    """Validates the request's fields and returns the canonical JSON body."""
    if not isinstance(fields, dict) or "image" not in fields:
        return Refusal(400, 'The request has no image; send a file field \'image\' or JSON {"image": "<base64>"}.')
    image = fields["image"]
    if isinstance(image, str):
        try:
            image = base64.b64decode(image.split(",", 1)[-1] if image.startswith("data:") else image, validate=True)
        except (binascii.Error, ValueError):
            return Refusal(400, "The 'image' field is not valid base64; encode the image file's bytes in base64.")
    if not isinstance(image, bytes) or not image:
        return Refusal(400, "The 'image' field is empty; send the bytes of an image file.")
    if len(image) > MAX_IMAGE_BYTES:
        return Refusal(413, f"The image is {len(image) / 2**20:.1f} MB; images up to 20 MB are accepted.")
    try:
        top_k = int(fields.get("top_k", 5))
        reject_below = fields.get("reject_below")
        reject_below = check_reject_below(None if reject_below in (None, "") else float(reject_below))
        unfamiliar_below = fields.get("unfamiliar_below")
        unfamiliar_below = check_unfamiliar_below(None if unfamiliar_below in (None, "") else float(unfamiliar_below))
    except (TypeError, ValueError) as error:
        named = "reject_below" in str(error) or "unfamiliar_below" in str(error)
        detail = str(error) if named else "top_k must be a whole number such as 3."
        return Refusal(400, detail)
    if top_k < 1:
        return Refusal(400, f"top_k must be at least 1 (got {top_k}).")
    name = str(fields.get("name") or "upload")
    return {
        "image": base64.b64encode(image).decode(),
        "name": name,
        "top_k": top_k,
        "reject_below": reject_below,
        "unfamiliar_below": unfamiliar_below,
    }


class ClassifierAPI(ls.LitAPI):
    """LitServe API of one classifier file (``.safetensors`` with torch, or ``.onnx`` with onnxruntime).

    Args:
        classifier_path: the exported classifier.
        reject_below: default "none of these" top-probability threshold (None: the file's own).
        weights_path: backbone weights for a ``.safetensors`` file that does not embed them.
        max_batch_size: most requests answered by one model call.
        batch_timeout: seconds to wait for a batch to fill.
        unfamiliar_below: default "none of these" familiarity threshold (None: the file's own).
    """

    def __init__(
        self,
        classifier_path: str,
        reject_below: float | None = None,
        weights_path: str | None = None,
        max_batch_size: int = 16,
        batch_timeout: float = 0.002,
        unfamiliar_below: float | None = None,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.default_unfamiliar_below = unfamiliar_below
        self.classifier_path, self.weights_path = classifier_path, weights_path
        self.file_format: ClassifierFormat = classifier_format(classifier_path)
        self.default_reject_below = reject_below

    @override
    def setup(self, device: str) -> None:
        # libtiff's and libjpeg's own prints (hundreds of lines for damaged files) go to a log file;
        # the server's log gets one line per image that had any.
        self.decoder_log = keep_decoder_messages_in(Path(tempfile.gettempdir()) / f"promptlab-serve-{os.getpid()}.log")
        # Imported for the file's kind only: an ONNX server never imports torch.
        if self.file_format == "onnx":
            from promptlab.deploy.onnx_runtime import OnnxClassifier

            runtime = OnnxClassifier(self.classifier_path)
            self.classifier: Any = runtime
            self._prepare, self._stack = runtime.to_array, np.stack
        else:
            import torch

            from promptlab.deploy.classifier import Classifier

            classifier = Classifier.load(self.classifier_path, self.weights_path, device=device)
            self.classifier = classifier
            self._prepare, self._stack = classifier.transform, cast(Any, torch.stack)
        if self.default_reject_below is None:
            self.default_reject_below = self.classifier.reject_below
        if self.default_unfamiliar_below is None:
            self.default_unfamiliar_below = self.classifier.unfamiliar_below
        log.info("Serving %s (%d classes) on %s.", self.classifier_path, len(self.classifier.class_names), device)

    def decode_request(self, request: dict) -> tuple[Any, dict] | Refusal:
        """The canonical body (see :class:`RequestGate`) -> (preprocessed image, options), or a refusal
        for this request alone (raising here would fail every request of the batch).
        """
        logged = self.decoder_log.stat().st_size if self.decoder_log.is_file() else 0
        try:
            image, _ = decode_image_bytes(base64.b64decode(request["image"]), request["name"])
            return self._prepare(image), request
        except ImageLoadError as error:  # every decoding failure, whatever the decoder raised
            return Refusal(400, str(error))
        finally:
            if self.decoder_log.is_file() and self.decoder_log.stat().st_size > logged:
                log.warning("Image %r: its decoders' messages are in %s.", request["name"], self.decoder_log)

    @override
    def batch(self, inputs: list) -> list:
        return inputs  # predict stacks the readable images itself

    @override
    def unbatch(self, output: list) -> list:
        return output

    def predict(self, inputs: list) -> list:
        """Decoded requests -> one prediction dict (or the request's refusal) each, in order."""
        readable = [i for i, item in enumerate(inputs) if not isinstance(item, Refusal)]
        outputs: list = list(inputs)
        if readable:
            probabilities, familiarity = self.classifier.scores(self._stack([inputs[i][0] for i in readable]))
            scores = [None] * len(readable) if familiarity is None else familiarity.tolist()
            names = self.classifier.class_names
            for i, row, score in zip(readable, probabilities.tolist(), scores, strict=True):
                options = inputs[i][1]
                threshold = self.default_reject_below if options["reject_below"] is None else options["reject_below"]
                unfamiliar = options.get("unfamiliar_below")
                unfamiliar = self.default_unfamiliar_below if unfamiliar is None else unfamiliar
                (prediction,) = rank(
                    [row], names, options["top_k"], threshold, None if score is None else [score], unfamiliar
                )
                outputs[i] = prediction.to_dict()
        return outputs

    @override
    def encode_response(self, output: dict | Refusal):
        if isinstance(output, Refusal):
            return _refuse(output.status, output.detail)
        return output


def stop_on_signals() -> None:
    """SIGTERM and SIGINT (Ctrl+C) stop the server and every worker process it started, quietly.

    LitServe's own shutdown leaves its worker processes running when the main process is terminated,
    and prints a traceback per process on Ctrl+C.
    """

    def stop(signum: int, frame: object) -> None:
        logging.disable(logging.CRITICAL)  # LitServe's monitor thread would report the workers' ends as crashes
        children = psutil.Process().children(recursive=True)
        for child in children:
            child.terminate()
        _, alive = psutil.wait_procs(children, timeout=5)
        for child in alive:
            child.kill()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def check_address(host: str, port: int, api_key: str | None, insecure: bool = False) -> tuple[str, list[str]]:
    """Where the server may listen, and what to say about it.

    Loopback needs no key; every interface (0.0.0.0 or ::) needs an API key, or ``insecure``.

    Returns:
        The host LitServe binds ("localhost" becomes 127.0.0.1) and warnings to print.

    Raises:
        ServeError: an empty key, an address LitServe cannot bind, a port out of range or in use, or the
            network without a key and without ``insecure``.
    """
    if api_key is not None and not api_key.strip():
        raise ServeError(
            f"The API key is empty (an unset shell variable in --api_key or ${API_KEY_ENV}?); pass a key, or leave "
            "both out to serve this machine alone."
        )
    if host not in LOOPBACK_HOSTS and host not in NETWORK_HOSTS:
        raise ServeError(
            f"--host {host!r} cannot be bound; use 127.0.0.1 (this machine only) or 0.0.0.0 or :: (every network "
            "interface, with an API key)."
        )
    if not 1024 <= port <= 65535:
        raise ServeError(f"--port must be from 1024 to 65535 (got {port}).")
    bind_host = LOOPBACK_HOSTS.get(host, host)
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((bind_host, port))
        except OSError as error:
            raise ServeError(
                f"Port {port} on {bind_host} cannot be used ({error.strerror}); stop what uses it or choose another "
                "--port."
            ) from error
    warnings = []
    if bind_host in NETWORK_HOSTS and api_key is None:
        if not insecure:
            raise ServeError(
                f"--host {bind_host} opens the server to every machine that can reach this one; set --api_key (or "
                f"${API_KEY_ENV}), or pass --insecure to serve without authentication."
            )
        warnings.append(
            f"WARNING: serving on {bind_host}:{port} WITHOUT AN API KEY (--insecure): anyone who can reach this "
            "machine can use the classifier."
        )
    if bind_host in NETWORK_HOSTS:
        warnings.append(
            "Note: HTTP is unencrypted (the key too); put a reverse proxy with TLS in front (see the manual's Deploy "
            "page)."
        )
    return bind_host, warnings


def run_server(
    server: ls.LitServer, host: str, port: int, request_timeout: float = 30.0, max_connections: int = 256
) -> None:
    """Runs the server with the connection limits of the manual's Deploy page.

    Args:
        server: from :func:`build_server`.
        host: from :func:`check_address`.
        port: the port.
        request_timeout: seconds a client has to send a whole request (headers and body).
        max_connections: connections and requests at once; more are answered 503 at once.
    """
    server.run(
        host=host,
        port=port,
        generate_client_file=False,
        log_level="warning",
        http=protocol_with_request_timeout(request_timeout),
        limit_concurrency=max_connections,
        timeout_keep_alive=5,
    )


def build_server(
    classifier_path: str,
    api_key: str | None = None,
    reject_below: float | None = None,
    weights_path: str | None = None,
    max_batch_size: int = 16,
    batch_timeout: float = 0.002,
    accelerator: str = "auto",
    unfamiliar_below: float | None = None,
) -> ls.LitServer:
    """The LitServer of one classifier file (see the module docstring); ``.run(host=..., port=...)`` starts it.

    Raises:
        ServeError: an option is out of range.
        ClassifierPathError: the classifier file is missing or not a classifier.
    """
    if max_batch_size < 1 or batch_timeout < 0:
        raise ServeError("--max_batch_size must be at least 1 and --batch_timeout at least 0 seconds.")
    reject_below = check_reject_below(reject_below, "--reject_below")
    unfamiliar_below = check_unfamiliar_below(unfamiliar_below, "--unfamiliar_below")
    api = ClassifierAPI(classifier_path, reject_below, weights_path, max_batch_size, batch_timeout, unfamiliar_below)
    return ls.LitServer(
        api,
        accelerator=accelerator,
        workers_per_device=1,
        timeout=60,
        middlewares=[(RequestGate, {"api_key": api_key})],
    )
