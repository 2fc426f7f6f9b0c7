"""``promptlab serve``: an exported classifier over HTTP with LitServe."""

from __future__ import annotations

import os
import sys
from typing import Literal


def serve(
    *,
    classifier: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    insecure: bool = False,
    reject_below: float | None = None,
    unfamiliar_below: float | None = None,
    max_batch_size: int = 16,
    batch_timeout: float = 0.002,
    request_timeout: float = 30.0,
    max_connections: int = 256,
    weights_path: str | None = None,
    accelerator: Literal["auto", "cpu", "cuda"] = "auto",
) -> int:
    """Serve a classifier file over HTTP (POST /predict, GET /health) with LitServe.

    Args:
        classifier: a .safetensors or .onnx file from `promptlab export`.
        host: 127.0.0.1 (this machine only), or 0.0.0.0 / :: (every network interface: needs an API key
            or --insecure).
        port: port to listen on (1024-65535).
        api_key: require this key in the X-API-Key header (or set $PROMPTLAB_API_KEY); an empty one is refused.
        insecure: serve every network interface without an API key (said loudly at start).
        reject_below: "none of these" below this top probability.
        unfamiliar_below: "none of these" below this familiarity (-2 to 2; default: the file's own
            threshold; -2 turns it off).
        max_batch_size: most requests per model call.
        batch_timeout: seconds a batch waits to fill.
        request_timeout: seconds a client has to send a whole request; slower connections are closed.
        max_connections: connections and requests at once; more are answered 503 at once.
        weights_path: backbone weights, if the file does not embed them.
        accelerator: where the model runs.
    """
    # Imported here, not at the top, so that `promptlab --help` does not import LitServe and torch.
    from promptlab.deploy.serving import (
        API_KEY_ENV,
        API_KEY_HEADER,
        ServeError,
        build_server,
        check_address,
        run_server,
        stop_on_signals,
    )

    if request_timeout <= 0 or max_connections < 1:
        raise ServeError("--request_timeout must be above 0 seconds and --max_connections at least 1.")
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    bind_host, warnings = check_address(host, port, key, insecure)
    server = build_server(
        classifier, key, reject_below, weights_path, max_batch_size, batch_timeout, accelerator, unfamiliar_below
    )
    for warning in warnings:
        print(warning, file=sys.stderr, flush=True)
    key_note = f", {API_KEY_HEADER} required" if key else ""
    print(f"Serving {classifier} on http://{host}:{port}/predict{key_note}", flush=True)
    stop_on_signals()
    run_server(server, bind_host, port, request_timeout, max_connections)
    return 0
