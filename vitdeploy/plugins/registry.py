"""Every plugin node vitdeploy writes, declared once: one row per ONNX op type.

Pure data (no imports from vitdeploy, onnx or torch), so any module may read it. Every other
list of plugins is derived from these rows: the ORT faces registered before the first session
(`vitdeploy.plugins.ORT_FACES`), the TensorRT faces an engine build registers (`TRT_FACES`),
the op types FP16 conversion makes FP16 (`vitdeploy.calibration.fp16`), and the plugin-node
finders of the build, bench, lint and serving code (`vitdeploy.onnxgraph.plugin_nodes`).

A row names the folder under `vitdeploy/plugins/` that serves the op type and the faces that
folder has for it (modules `spec`, `reference`, `ort`, `kernel`, `trt`); the registry test
imports every declared face and checks it serves this op type. A TensorRT *stock* plugin
(`MultiscaleDeformableAttnPlugin_TRT`, shipped in libnvinfer_plugin) has CPU faces for
verification but no kernel or TensorRT face of ours.

Adding a plugin: its folder with the faces, one row here, its rewrite pass
(`vitdeploy/deploy/rewrite/<pass>.py`, listed in `vitdeploy.deploy.rewrite.PASSES`).
"""
from __future__ import annotations

from dataclasses import dataclass

ALL_FACES = ("spec", "reference", "ort", "kernel", "trt")


@dataclass(frozen=True)
class PluginOp:
    op_type: str  # the ONNX node's op_type = the TensorRT plugin name
    folder: str  # vitdeploy/plugins/<folder>/
    domain: str  # the ONNX node's domain
    spec: str  # the attribute of <folder>/spec.py holding this op type's PluginSpec
    rewrite_pass: str  # the pass in vitdeploy.deploy.rewrite.PASSES that emits it
    faces: tuple[str, ...] = ALL_FACES
    stock: bool = False  # TensorRT ships the plugin: our faces only run and verify it on the CPU

    def module(self, face: str) -> str:
        """Dotted module of one of this row's faces."""
        if face not in self.faces:
            raise KeyError(f"{self.op_type} has no {face} face")
        return f"vitdeploy.plugins.{self.folder}.{face}"

    @property
    def kind(self) -> str:
        return "TensorRT stock" if self.stock else "vitdeploy AOT"


PLUGINS: tuple[PluginOp, ...] = (
    PluginOp("WindowAttention", "window_attention", "vitdeploy", "SPEC", "swin"),
    PluginOp("GatedPositionalAttention", "gated_positional_attention", "vitdeploy", "SPEC", "gpsa"),
    PluginOp("MultiscaleDeformableAttnPlugin_TRT", "msda", "trt.plugins", "STOCK_SPEC", "msda",
             faces=("spec", "reference", "ort"), stock=True),
    PluginOp("MultiscaleDeformableAttention", "msda", "vitdeploy", "VITDEPLOY_SPEC", "msda"),
    PluginOp("HaloAttention", "halo_attention", "vitdeploy", "SPEC", "halo"),
)

BY_OP: dict[str, PluginOp] = {p.op_type: p for p in PLUGINS}
OP_TYPES: frozenset[str] = frozenset(BY_OP)


def faces(face: str) -> dict[str, str]:
    """op type -> module of its `face` ("ort", "trt", ...), for every row that has one, in registry order."""
    return {p.op_type: p.module(face) for p in PLUGINS if face in p.faces}


def lookup(node) -> PluginOp | None:
    """The row of an ONNX node (anything with `op_type` and `domain`) that is one of our plugin nodes, else None.

    A registered op type in the default ONNX domain is not a plugin node: TensorRT's parser and the
    ONNX checker would read it as a standard op.
    """
    row = BY_OP.get(node.op_type)
    return row if row is not None and node.domain not in ("", "ai.onnx") else None


def is_plugin_node(node) -> bool:
    return lookup(node) is not None
