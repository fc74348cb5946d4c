"""Time to accuracy of a recipe over seeds, and the leaderboard: see visionlab.tools.speedrun."""

import sys

from visionlab.tools.speedrun import main

if __name__ == "__main__":
    sys.exit(main())
