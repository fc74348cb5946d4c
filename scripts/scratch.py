"""The notes' MLP by hand next to visionlab's: `python scripts/scratch.py` (see conf/scratch.yaml)."""

from visionlab.entrypoints.scratch import main

if __name__ == "__main__":
    main()
