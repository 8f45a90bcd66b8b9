"""Serving the labeling page: who may reach it (``check_bind``) and a server thread for it.

Shared by the web oracle (:mod:`galframe_hitl.oracle`), which serves the page while the loop runs, and
the page itself (:mod:`galframe_hitl.webapp`), which also runs standalone.
"""
from __future__ import annotations

import ipaddress
import threading
import time
from typing import Any, Optional

from galframe.errors import ConfigError

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: Optional[str], host_key: str = "oracle.host", token_key: str = "oracle.token") -> None:
    """Refuse to serve beyond this machine without a token."""
    if not is_loopback(str(host)) and not token:
        raise ConfigError(
            f"{host_key}={host} makes the labeling page reachable from other machines, which needs a token: "
            f"set {token_key}=<secret> (or GALFRAME_HITL_TOKEN), or bind {host_key}=127.0.0.1."
        )
    if token is not None and len(str(token)) < 8:
        raise ConfigError(
            f"{token_key} is too short: use at least 8 characters "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe())')."
        )


class ServerThread:
    """A uvicorn server for an ASGI app in a background thread (started and stopped by the caller)."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        import uvicorn

        self.config = uvicorn.Config(app, host=host, port=int(port), log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, name="galframe-hitl-web", daemon=True)

    def start(self, timeout: float = 20.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise ConfigError(
                    f"the labeling page could not start on {self.config.host}:{self.config.port} (port in use?)."
                )
            if time.monotonic() > deadline:
                raise ConfigError(f"the labeling page did not start within {timeout:.0f} s.")
            time.sleep(0.05)

    @property
    def port(self) -> int:
        servers = getattr(self.server, "servers", None) or []
        for srv in servers:
            for sock in getattr(srv, "sockets", None) or []:
                return int(sock.getsockname()[1])
        return int(self.config.port)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
