"""Cost of each augmentation per epoch: `python scripts/augment_cost.py` (see visionlab.tools.augment_cost)."""

from visionlab.tools.augment_cost import main

if __name__ == "__main__":
    main()
