"""Precision as explicit ONNX: FP16 casts and INT8 Q/DQ, with calibration data and accuracy checks.

- `data`: calibration/evaluation inputs (image folders with timm preprocessing, .npy/.npz arrays).
- `precision.convert_fp16`: FP16 graph, normalisations kept FP32, plugin nodes FP16.
- `quantization.quantize_int8`: calibrated Q/DQ on MatMul/Gemm (constant weight) and Conv inputs, FP16 elsewhere.
- `cache`: the calibration cache (tensor ranges keyed by the model's sha256).
- `accuracy.compare_models`: what a precision change costs on real inputs.
"""
