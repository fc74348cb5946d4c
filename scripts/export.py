"""Export a checkpoint: `python scripts/export.py ckpt_path=PATH format=onnx` (see conf/export.yaml)."""

from visionlab.entrypoints.export import main

if __name__ == "__main__":
    main()
