"""Train a classifier: `python scripts/train.py model=cnn optimizer=adam` (see conf/)."""

from visionlab.entrypoints.train import main

if __name__ == "__main__":
    main()
