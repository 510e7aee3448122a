"""Triton Python backend model: encoded images (JPEG/PNG bytes) -> the network input, as `vitdeploy infer` makes it.

Written by `vitdeploy package --ensemble` as REPO/NAME_preprocess/1/model.py, the first step of the
NAME_ensemble pipeline (this model, then NAME). It reads `preprocess.json` beside it and runs the
preprocessing code vitdeploy itself runs, inlined below when the file is written (numpy and Pillow
only: the Python backend's stub environment needs nothing else).

Input "IMAGE" (TYPE_STRING): one encoded image per batch entry. Output: the model input tensor, float,
[C, H, W] per entry. An image that cannot be decoded fails its request with the reason; the other
requests of the batch are answered.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vitdeploy.image_transform import open_image, transform_image  # vitdeploy:inline image_transform

SPEC_NAME = "preprocess.json"


def _utils():
    import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend

    return pb_utils


class TritonPythonModel:
    def initialize(self, args):
        here = Path(args.get("model_repository", "")) / str(args.get("model_version", "1"))
        path = here / SPEC_NAME if (here / SPEC_NAME).is_file() else Path(__file__).resolve().parent / SPEC_NAME
        self.spec = json.loads(path.read_text())
        self.output = self.spec["ensemble"]["preprocess_output"]
        self.dtype = np.dtype(self.spec["ensemble"]["dtype"])

    def preprocess_one(self, data) -> np.ndarray:
        """One encoded image (bytes) -> (C, H, W) in the model's input dtype."""
        return transform_image(open_image(bytes(data)), self.spec).astype(self.dtype)

    def execute(self, requests):
        pb_utils = _utils()
        responses = []
        for request in requests:
            images = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy()
            try:
                # batched: IMAGE is [B, 1] -> [B, C, H, W]; a static-batch model: [N] -> its full [N, C, H, W]
                x = np.stack([self.preprocess_one(b) for b in images.reshape(-1)])
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output, x)]))
            except Exception as e:  # a corrupt image fails its own request, not the batch
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"cannot preprocess the image: {type(e).__name__}: {e}")))
        return responses
