"""``python -m firmware_host``."""

from .cli import main

main(prog_name="firmware-host")
