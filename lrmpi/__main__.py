"""`python -m lrmpi`: the CLI."""
import sys

from lrmpi.cli import main

sys.exit(main())
