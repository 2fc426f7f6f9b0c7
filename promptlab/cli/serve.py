"""``promptlab serve``: an exported classifier over HTTP with LitServe."""

from __future__ import annotations

import os
from typing import Literal


def serve(
    *,
    classifier: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    reject_below: float | None = None,
    max_batch_size: int = 16,
    batch_timeout: float = 0.002,
    weights_path: str | None = None,
    accelerator: Literal["auto", "cpu", "cuda"] = "auto",
) -> int:
    """Serve a classifier file over HTTP (POST /predict, GET /health) with LitServe.

    Args:
        classifier: a .safetensors or .onnx file from `promptlab export`.
        host: address to bind (loopback only unless told otherwise).
        port: port to listen on.
        api_key: require this key in the X-API-Key header (or set $PROMPTLAB_API_KEY).
        reject_below: "none of these" below this top probability.
        max_batch_size: most requests per model call.
        batch_timeout: seconds a batch waits to fill.
        weights_path: backbone weights, if the file does not embed them.
        accelerator: where the model runs.
    """
    # Imported here, not at the top, so that `promptlab --help` does not import LitServe and torch.
    from promptlab.deploy.serving import API_KEY_ENV, API_KEY_HEADER, build_server, stop_on_signals

    key = api_key or os.environ.get(API_KEY_ENV) or None
    server = build_server(classifier, key, reject_below, weights_path, max_batch_size, batch_timeout, accelerator)
    key_note = f", {API_KEY_HEADER} required" if key else ""
    print(f"Serving {classifier} on http://{host}:{port}/predict{key_note}", flush=True)
    stop_on_signals()
    server.run(host=host, port=port, generate_client_file=False, log_level="warning")
    return 0
