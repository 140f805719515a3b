"""``python -m firmware_host``."""

from firmware_host.cli.commands import main

main(prog_name="firmware-host")
