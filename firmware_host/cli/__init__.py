"""The ``firmware-host`` command line (click), what ``run`` does, and how
results are printed. Nothing on the data path imports this package."""

from firmware_host.cli.commands import main as main
