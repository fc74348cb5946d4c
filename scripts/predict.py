"""Predict classes: `python scripts/predict.py ckpt_path=PATH inputs=[a.png,dir/]` (see conf/predict.yaml)."""

from visionlab.entrypoints.predict import main

if __name__ == "__main__":
    main()
