"""The WebSocket edge: the per-connection session state machine and its Starlette adapter."""
