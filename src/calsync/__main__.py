"""``python -m calsync``: the command line, as the ``calsync`` script runs it."""

from calsync._cli import main

main()
