"""`python -m fedlora ...`: the command line (fedlora/cli.py)."""
import sys

from fedlora.cli import entry

sys.exit(entry())
