"""``python -m streammix``: the command line."""

from .cli import main

main()
