"""vLLM plug-in entry points of ``processfork.vllm``.

Two entry-point groups that vLLM 0.33 reads (``vllm/plugins/__init__.py``):

``vllm.general_plugins`` -> :func:`register` (run in every vLLM process): registers
``ProcessForkConnector`` with vLLM's ``KVConnectorFactory``, so
``--kv-transfer-config '{"kv_connector": "ProcessForkConnector", "kv_role":
"kv_both"}'`` works without ``kv_connector_module_path``.

``vllm.endpoint_plugins`` -> :class:`ProcessForkEndpointPlugin` (API server process
only; ``vllm/plugins/endpoint_plugins/interface.py``): attaches the
``/v1/processfork/*`` routes (routes.py) to vLLM's FastAPI app in ``build_app``.
vLLM loads endpoint plugins only when named in ``VLLM_PLUGINS``. Both entry points
are named ``processfork``, so ``VLLM_PLUGINS=processfork`` enables both (an allowlist
in ``VLLM_PLUGINS`` also filters the general plugins).
"""
from __future__ import annotations

import json
from argparse import Namespace
from typing import TYPE_CHECKING, Any, Optional

from fastapi import FastAPI
from vllm.logger import init_logger

import processfork

from processfork._integration.session import Session
from processfork.vllm._config import ConnectorSettings
from processfork.vllm._namespace import RequestNamespaces
from processfork.vllm.routes import build_router

if TYPE_CHECKING:
    from starlette.datastructures import State
    from vllm.engine.protocol import EngineClient

__all__ = ["register", "ProcessForkEndpointPlugin", "CONNECTOR_NAME"]


CONNECTOR_NAME = "ProcessForkConnector"

# Under "vllm": vLLM's logging config (handler, format, VLLM_LOGGING_LEVEL) applies.
logger = init_logger("vllm.processfork")


def register() -> None:
    """``vllm.general_plugins`` hook: makes ``kv_connector: "ProcessForkConnector"``
    resolvable by vLLM's connector factory (lazily imported). Idempotent: vLLM may run
    general plugins more than once per process."""
    from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory

    try:
        KVConnectorFactory.register_connector(CONNECTOR_NAME, "processfork.vllm.connector",
                                              "ProcessForkConnector")
    except ValueError:
        pass  # already registered in this process


def _extra_config(kv_transfer_config: Any) -> dict[str, Any] | None:
    """``kv_connector_extra_config`` of the server's ``--kv-transfer-config`` when it
    selects this connector (a KVTransferConfig, a dict or its JSON text)."""
    cfg = kv_transfer_config
    if cfg is None:
        return None
    if isinstance(cfg, str):
        cfg = json.loads(cfg)
    get = cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
    if get("kv_connector") != CONNECTOR_NAME:
        return None
    return dict(get("kv_connector_extra_config") or {})


class ProcessForkEndpointPlugin:
    """``vllm.endpoint_plugins`` factory: the ``/v1/processfork/*`` routes.

    The routes talk to the daemon the server's connector uses (its
    ``kv_connector_extra_config.socket``), else ``$PROCESSFORK_SOCKET``, else the
    default socket. With one daemon per rank (a socket template) a snapshot would
    need every rank's daemon, so the routes then answer 503 and name the daemons'
    own HTTP ports instead.
    """

    name = "processfork"
    required_tasks = None  # no engine task needed: the routes talk to the daemon

    def __init__(self) -> None:
        self._session: Optional[Session] = None
        self._refusal: Optional[str] = None
        self._namespace: Optional[bytes] = None  # plain requests' (vllm/_namespace.py)

    def configure(self, socket: Optional[str], timeout_ms: int = 10_000) -> None:
        """Points the routes at ``socket`` (what :meth:`init_state` does from the
        server's arguments). The session reconnects on the next request after a loss."""
        if self._session is not None:
            self._session.close()
        self._session = Session(socket, timeout_ms, retry_interval_s=0.0, logger=logger)
        self._refusal = None

    def _current_session(self) -> Session:
        if self._refusal is not None:
            raise processfork.Unavailable(self._refusal)
        if self._session is None:
            raise processfork.Unavailable("the ProcessFork routes have no daemon configured")
        return self._session

    def attach_router(self, app: FastAPI) -> None:
        """Adds the routes to vLLM's app (called once by ``build_app``)."""
        # The routes themselves (APIRoute), not an included router: vLLM's
        # attach_endpoint_plugins resolves path/method overrides over APIRoutes.
        app.router.routes.extend(
            build_router(self._current_session, lambda: self._namespace).routes)

    async def init_state(self, engine_client: "EngineClient | None", state: "State",
                         args: Namespace) -> None:
        """Reads the daemon's socket from the server's ``--kv-transfer-config``."""
        extra = _extra_config(getattr(args, "kv_transfer_config", None))
        settings = ConnectorSettings.from_extra_config(extra)
        if settings.per_rank:
            self._refusal = (f"the connector uses one daemon per rank ({settings.socket}); "
                             f"use each daemon's own HTTP port for snapshots")
            return
        self.configure(settings.socket, settings.timeout_ms)
        model = getattr(args, "model", None)
        if model:
            self._namespace = RequestNamespaces(model, getattr(args, "revision", None),
                                                settings.model_fingerprint).plain()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
