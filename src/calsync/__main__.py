"""``python -m calsync``: the command line, as the ``calsync`` script runs it."""

from calsync.cli.commands import main

main()
