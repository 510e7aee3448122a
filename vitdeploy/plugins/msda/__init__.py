"""Multi-scale deformable attention (Deformable DETR): TensorRT's stock plugin and vitdeploy's Triton variant."""
