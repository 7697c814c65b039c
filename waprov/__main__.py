"""`python3 -m waprov …` is the same as the `waprov` launcher."""

import sys

from waprov.cli import main

sys.exit(main(sys.argv))
