"""`prefsweep serve`: the REST service and web page under uvicorn."""
from __future__ import annotations

import logging
import sys

from api.security import is_loopback
from sweep.config.redact import install_log_masking
from sweep.service.settings import Settings, from_env


def check_can_serve(host: str, settings: Settings) -> None:
    """Refuse to listen beyond loopback without a configured token."""
    if not is_loopback(host) and not settings.api_token:
        raise SystemExit(
            f"refusing to serve on {host} without PREFSWEEP_API_TOKEN: anyone who reaches the port "
            "could launch jobs on your Ray cluster. Set the token, or serve on 127.0.0.1."
        )


def serve(host: str = "127.0.0.1", port: int = 8000, settings: Settings | None = None) -> None:
    import uvicorn

    from api.app import create_app

    settings = settings or from_env()
    check_can_serve(host, settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _, generated = settings.ensure_token()
    if generated:
        print(f"prefsweep: no PREFSWEEP_API_TOKEN set; generated one in {settings.data_dir / 'api_token'}",
              file=sys.stderr, flush=True)
    app = create_app(settings)
    print(f"prefsweep: serving http://{host}:{port}/ (API docs at /docs), data in {settings.data_dir}",
          file=sys.stderr, flush=True)
    config = uvicorn.Config(app, host=host, port=port, log_level="info", proxy_headers=False)  # sets up logging
    # The access log prints query strings (`set=storage.optuna_url=...`), errors print tracebacks.
    install_log_masking("uvicorn", "uvicorn.error", "uvicorn.access")
    uvicorn.Server(config).run()
