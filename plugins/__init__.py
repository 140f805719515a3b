"""First-party plugins for firmware-host (installed as ``firmware_host_plugins``).

Each module is one plugin registered under the ``firmware_host.plugins``
entry-point group, exactly like a third-party plugin, and uses only the
public API (``import firmware_host``):

- ``stats``: a periodic one-line summary per device in the log
- ``heartbeat``: 0xF2 pings to fh1 devices and a staleness watchdog
- ``sqlite``: a SQLite sink (idempotent, size-bounded)
- ``stdout``: a JSON-lines sink on standard output
"""
