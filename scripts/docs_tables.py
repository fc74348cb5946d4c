"""The README's table of figures, generated from results files: see visionlab.tools.docs_tables."""

import sys

from visionlab.tools.docs_tables import main

if __name__ == "__main__":
    sys.exit(main())
