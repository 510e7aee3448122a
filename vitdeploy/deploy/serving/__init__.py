"""Hand-off to the services that run engines: a Triton model repository and a DeepStream nvinfer config.

`artifact.py` decides what is served from a build directory (the engine, or, where none
was built, a plugin-free ONNX) and reads its real I/O; `triton.py` writes and validates
`config.pbtxt` with Triton's own model-config protobuf; `deepstream.py` writes the
nvinfer key file; `triton_client.py` is copied verbatim next to the model as `client.py`.
"""
