"""Learning-rate finder: `python scripts/lr_find.py [train overrides]` (see visionlab.entrypoints.lr_find)."""

from visionlab.entrypoints.lr_find import main

if __name__ == "__main__":
    main()
