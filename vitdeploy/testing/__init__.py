"""Verification harness for tests/ and benchmarks/: nothing in the product imports it.

`contract` drives plugin nodes through TensorRT's real Python plugin layer over the
`trt_standin` core, `contract_graphs` says which real rewritten graphs it uses,
`driver_launch` repeats TensorRT's AOT launch with the CUDA driver on a GPU. The package is
left out of the wheel (pyproject `[tool.setuptools.packages.find]`).
"""
