"""`python -m lrmpi`: the CLI."""
from lrmpi.cli import console

console()
