"""TensorRT face of vitdeploy's `MultiscaleDeformableAttention`: `tensorrt.plugin` registration + AOT Triton kernel.

Only the vitdeploy variant needs registering: `MultiscaleDeformableAttnPlugin_TRT` ships in
libnvinfer_plugin and TensorRT's ONNX parser finds it by name/version once the stock plugins
are initialised (`trt.init_libnvinfer_plugins(logger, "")`).

`register()` declares `vitdeploy::MultiscaleDeformableAttention` with the stock plugin's IO
(output [N, Lq, M, D] in value's type; spatial shapes and level starts INT32; the float IO all
FP32 or all FP16) and an `aot_impl` that returns the PTX of the kernel the CPU tests run, its
grid (query blocks x batch*heads) and the extra scalars S, Lq, M. With AOT the PTX lives in the
engine, so the engine runs without Python. TensorRT is imported only inside these functions.
"""
# No `from __future__ import annotations` here: tensorrt.plugin inspects real annotation objects.

from vitdeploy.plugins.trt import register_once, target_arch as _target_arch
from vitdeploy.plugins.msda import kernel
from vitdeploy.plugins.msda.spec import VITDEPLOY_SPEC as SPEC

BLOCK_Q_TACTICS = (16, 32, 64)  # tactic = queries per program; TensorRT times each


def target_arch() -> int:
    return _target_arch("MultiscaleDeformableAttention")


def _static(expr, what: str) -> int:
    if not expr.is_constant:
        raise ValueError(f"MultiscaleDeformableAttention: {what} must be known when the engine is built")
    return expr.constant_value()


def register() -> None:
    """Register the plugin with `tensorrt.plugin` (idempotent; a failed attempt is re-raised, not hidden)."""
    register_once(SPEC, _define)


def _define() -> None:
    """The `tensorrt.plugin` decorators (run once by `register`)."""
    from typing import List, Tuple, Union

    import tensorrt as trt
    import tensorrt.plugin as trtp

    @trtp.register(SPEC.plugin_id)
    def _desc(value: trtp.TensorDesc, spatial_shapes: trtp.TensorDesc, level_start_index: trtp.TensorDesc,
              sampling_locations: trtp.TensorDesc, attention_weights: trtp.TensorDesc) -> trtp.TensorDesc:
        out = value.like()
        out.shape_expr[1] = sampling_locations.shape_expr[1]  # [N, Lq, M, D]
        return out

    @trtp.autotune(SPEC.plugin_id)
    def _autotune(value: trtp.TensorDesc, spatial_shapes: trtp.TensorDesc, level_start_index: trtp.TensorDesc,
                  sampling_locations: trtp.TensorDesc, attention_weights: trtp.TensorDesc,
                  outputs: Tuple[trtp.TensorDesc]) -> List[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination("FP32|FP16, INT32, INT32, FP32|FP16, FP32|FP16, FP32|FP16", "LINEAR",
                                         list(BLOCK_Q_TACTICS))]

    @trtp.aot_impl(SPEC.plugin_id)
    def _aot(value: trtp.TensorDesc, spatial_shapes: trtp.TensorDesc, level_start_index: trtp.TensorDesc,
             sampling_locations: trtp.TensorDesc, attention_weights: trtp.TensorDesc,
             outputs: Tuple[trtp.TensorDesc], tactic: int
             ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymIntExprs]:
        loc = sampling_locations.shape_expr
        cfg = kernel.LaunchConfig(
            num_levels=_static(loc[3], "the number of levels"),
            num_points=_static(loc[4], "the number of points"),
            head_dim=_static(value.shape_expr[3], "the head dimension"),
            block_q=tactic if tactic in BLOCK_Q_TACTICS else 32,
        )
        dtype = "fp16" if value.dtype == trt.float16 else "fp32"
        name, ptx, meta = kernel.ptx_for_tensorrt(target_arch(), dtype, cfg)
        batch, spatial, heads = value.shape_expr[0], value.shape_expr[1], value.shape_expr[2]
        queries = loc[1]
        launch = trtp.KernelLaunchParams()
        launch.grid_x, launch.grid_y = cfg.grid(batch, queries, heads)
        launch.block_x = meta.num_warps * 32
        launch.shared_mem = meta.shared
        extra = trtp.SymIntExprs(3)
        extra[0] = trtp.SymInt32(spatial)
        extra[1] = trtp.SymInt32(queries)
        extra[2] = trtp.SymInt32(heads)
        return name, ptx, launch, extra

def run_one_node(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, *, stock: bool = False):
    """Build and run a one-node TensorRT network with the plugin (FP32); returns a CUDA tensor [N, Lq, M, D].

    `stock=True` runs TensorRT's own MultiscaleDeformableAttnPlugin_TRT instead (v2 from TensorRT 10.11, else v1), so the
    `trt`-marked tests check both node types against the reference.
    """
    import tensorrt as trt

    from vitdeploy.plugins.trt import run_plugin_network

    feeds = {"value": value.float(), "spatial_shapes": spatial_shapes.int(), "level_start_index": level_start_index.int(),
             "sampling_locations": sampling_locations.float(), "attention_weights": attention_weights.float()}

    def add_layer(network, itensors):
        if stock:
            from vitdeploy.machine import stock_msda_version
            from vitdeploy.plugins.msda.spec import STOCK_SPECS

            spec = STOCK_SPECS[stock_msda_version(trt.__version__).version]
            from vitdeploy.tensorrt_session import init_stock_plugins

            init_stock_plugins(trt)
            creator = trt.get_plugin_registry().get_creator(spec.name, spec.version, "")
            if creator is None:
                raise RuntimeError(f"{spec.name} version {spec.version} is not in this TensorRT's plugin registry")
            fields = trt.PluginFieldCollection([])
            if spec.version == "1":  # IPluginV2DynamicExt
                return network.add_plugin_v2(itensors, creator.create_plugin(spec.name, fields))
            plugin = creator.create_plugin(spec.name, fields, trt.TensorRTPhase.BUILD)
            return network.add_plugin_v3(itensors, [], plugin)
        import tensorrt.plugin as trtp

        register()
        return network.add_plugin(trtp.op.vitdeploy.MultiscaleDeformableAttention(*itensors), aot=True)

    n, _, m, d = value.shape
    return run_plugin_network(feeds, add_layer, (n, sampling_locations.shape[1], m, d), "MultiscaleDeformableAttention")
