"""The LitServe API: requests arrive already checked and decoded (visionlab.serve.uploads),
LitServe gathers up to `max_batch_size` of them within `batch_timeout` seconds, and one
model call answers them all with the top-k classes."""

import signal
from typing import Any

import litserve as ls
import numpy as np
import torch

from visionlab.app.runs import top_k
from visionlab.serve import metrics
from visionlab.serve.backends import Backend, BackendSource
from visionlab.serve.uploads import Upload, png_base64


class ClassifierAPI(ls.LitAPI):
    """Top-k classes of images for POST /predict, from a backend loaded in each worker."""

    def __init__(self, source: BackendSource, top_k: int, max_batch_size: int, batch_timeout: float) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path="/predict")
        self.source, self.top_k = source, top_k
        self.backend: Backend | None = None

    def setup(self, device: str) -> None:
        # Ctrl-C reaches the whole process group; the main process stops the workers itself.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.backend = self.source.load(device)

    def decode_request(self, request: Upload) -> dict[str, Any]:
        # The annotation is the point: FastAPI runs uploads.upload_payload in the HTTP server,
        # so the request arrives decoded and checked. (No `from __future__ import annotations`
        # here: LitServe reads the annotation as an object.)
        return request

    def predict(self, x: dict[str, Any] | list[dict[str, Any]]) -> dict[str, Any] | list[dict[str, Any]]:
        """One model call for a request, or for a batch of them (a list) when batching."""
        items = x if isinstance(x, list) else [x]
        assert self.backend is not None, "setup() loads the backend"
        probs = self.backend.probabilities(torch.from_numpy(np.stack([item["pixels"] for item in items])))
        answers: list[dict[str, Any]] = [
            {"top_k": [{"class": name, "probability": p} for name, p in best]}
            for best in top_k(probs, self.backend.classes, self.top_k)
        ]
        metrics.observe_batch([a["top_k"][0]["class"] for a in answers])
        for item, answer in zip(items, answers):
            answer["model"], answer["backend"] = self.backend.name, self.backend.kind
            if item["preview"]:
                answer["input_png"] = png_base64(item["pixels"])
            answer.update(self.explain(item, answer))
        return answers if isinstance(x, list) else answers[0]

    def explain(self, item: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
        """Hook for explaining an answer (Grad-CAM, being built elsewhere): extra response
        keys for the image `item["pixels"]` and its `answer`, computed with `self.backend`.
        The page draws `overlay_png` (a base64 PNG, shown at the size of `input_png`) over
        the model's input when an answer has it. Nothing yet."""
        return {}
