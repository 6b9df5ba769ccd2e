"""The model server runtime (MLServer, Open Inference Protocol) and serving helpers.

- `runtime.LooplineRuntime`: the MLServer runtime (V2 over REST and gRPC, primary + fallback
  routing, canary split, metrics, drift-monitor sampling); settings in `settings`.
- `lean_server`: hosts the runtime behind a bare ASGI V2 app (`v2_asgi`, `v2_json`) and a
  gRPC service (`v2_grpc`), swapped on reload through `runtime_slot`.
- `v2_rest`: V2 REST inference bodies (JSON and binary tensor data) and their errors, read
  and written the same by both hosts; `mlserver_v2` routes the MLServer host's REST and gRPC
  inference through the lean host's handling; `metadata`: the inputs the metadata lists.
- `local.LocalServingManager` / `LocalModelSpec`: the `local` backend (lean server or
  MLServer processes on loopback ports: start, update, stop, status, endpoints).
- `seldon.build_server|build_model|build_experiment`: the `seldon` backend's desired state.
- `canary.decide_canary`, `canary.version_stats`: rollout decisions from server metrics.

docs/serving.md describes the wire format, settings, metrics and benchmark.
"""
