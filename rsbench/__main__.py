"""`python -m rsbench` runs the command line."""

from rsbench.cli import main

main()
