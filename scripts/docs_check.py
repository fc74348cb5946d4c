"""Screenshot the built documentation site in headless Chromium: see visionlab.tools.docs_check."""

import sys

from visionlab.tools.docs_check import main

if __name__ == "__main__":
    sys.exit(main())
