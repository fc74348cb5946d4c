"""Cost of each augmentation per epoch: `python scripts/augment_cost.py` (see visionlab.augment_cost)."""

from visionlab.augment_cost import main

if __name__ == "__main__":
    main()
