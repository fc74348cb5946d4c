"""Serving a trained model over HTTP with LitServe: `python scripts/serve.py ckpt_path=PATH`
(or `model_path=X.onnx`), see conf/serve.yaml and docs/how-to/serving.md.

backends: the PyTorch and ONNX Runtime models behind one `probabilities` call;
uploads: an HTTP request turned into the image the model takes, or a one-line 4xx;
api: the LitServe API (dynamic batching, top-k answers); metrics: Prometheus counters;
server: the entry point, the page and the routes.
"""
