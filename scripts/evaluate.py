"""Evaluate a checkpoint: `python scripts/evaluate.py ckpt_path=PATH [split=val]` (see conf/evaluate.yaml)."""

from visionlab.entrypoints.evaluate import main

if __name__ == "__main__":
    main()
