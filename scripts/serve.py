"""Serve a model over HTTP: `python scripts/serve.py ckpt_path=PATH` or `model_path=X.onnx` (see conf/serve.yaml)."""

from visionlab.serve.server import main

if __name__ == "__main__":
    main()
