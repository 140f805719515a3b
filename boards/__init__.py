"""Shipped board definitions (*.toml), installed as the package firmware_host_boards."""
