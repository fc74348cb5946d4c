"""Cost of each augmentation per epoch: `python scripts/augment_cost.py` (see visionlab.entrypoints.augment_cost)."""

from visionlab.entrypoints.augment_cost import main

if __name__ == "__main__":
    main()
