"""``python -m qkdtwin`` runs the command line."""

from qkdtwin.cli import entry_point

entry_point()
