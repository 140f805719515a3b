"""The control socket: the JSON-lines protocol, the server a runtime hosts, and
the light client the CLI uses (it imports nothing of the runtime, so
``firmware-host status`` starts fast)."""
