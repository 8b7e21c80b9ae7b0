"""`python -m segments.cli`: the `segments` command."""

from segments.cli import main

main()
