"""What every plugin's TensorRT face shares: the PTX target, the check of every PTX a face returns,
registering with `tensorrt.plugin` once, and registering every face a graph needs.

TensorRT is imported inside these functions only.
"""
from __future__ import annotations

import importlib
from typing import Callable

from vitdeploy.plugins import TRT_FACES
from vitdeploy.plugins.ptx import strip_unused_scratch_params
from vitdeploy.plugins.spec import PluginSpec


def target_arch(plugin: str) -> int:
    """SM version the TensorRT faces compile PTX for now (see `ptx_target.resolve`).

    Inside an engine build it is the build GPU's (or portable sm_80 for --hardware-compat
    ampere_plus); `VITDEPLOY_PTX_ARCH` (e.g. 87) lets CPU-only code compile and inspect PTX for
    a GPU it does not have. It does not build a plan for that GPU: a TensorRT plan is built and
    timed on, and tied to, the GPU that builds it (a Jetson plan is built on the Jetson).
    """
    from vitdeploy.plugins.ptx_target import resolve

    return resolve(plugin).arch


def finish_for_tensorrt(plugin: str, name: str, ptx: str, meta, *, inputs: int, extras: int, outputs: int = 1):
    """(name, PTX, metadata) as a TensorRT AOT face returns it: Triton's unused scratch parameters
    dropped, then checked against what TensorRT's launcher does (parameter list, block size, no more
    than 48 KiB of shared memory, pinned ISA, portability) and recorded for the manifest.

    Raises ValueError naming the problem: inside TensorRT's build that fails the build at once,
    where a wrong kernel would otherwise fail at launch, on some GPU, later.
    """
    from vitdeploy.plugins import ptx as ptxinfo
    from vitdeploy.plugins import ptx_target

    ptx = strip_unused_scratch_params(ptx, name, keep=inputs + extras + outputs)
    info = ptxinfo.parse(ptx, name)
    target = ptx_target.active() or ptx_target.PtxTarget(info.arch, ptx_target.pinned_isa(info.arch))
    bad = ptxinfo.problems(info, abi=ptxinfo.tensorrt_abi(inputs, extras, outputs), block=meta.num_warps * 32,
                           shared=meta.shared, max_isa=target.isa, portable=target.portable)
    if info.arch != target.arch:
        bad.append(f"compiled for sm_{info.arch}, the engine is built for {target.name}")
    if bad:
        raise ValueError(f"{plugin} kernel {name} ({info.target}): " + "; ".join(bad))
    ptx_target.record(plugin, target, info.isa, info.target, meta.shared + info.static_shared)
    return name, ptx, meta


def run_plugin_network(feeds: dict, add_layer, out_shape, what: str):
    """Build a one-plugin TensorRT network over `feeds` (name -> torch tensor), run it, return the output.

    `add_layer(network, itensors)` adds the plugin layer. The `trt`-marked tests use this to
    compare each plugin's TensorRT face with its reference; TensorRT is imported here, not above.
    """
    import tensorrt as trt
    import torch

    from vitdeploy.tensorrt_session import logger as process_logger

    logger = process_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    itensors = [network.add_input(n, trt.int32 if t.dtype == torch.int32 else trt.float32, tuple(t.shape))
                for n, t in feeds.items()]
    layer = add_layer(network, itensors)
    network.mark_output(layer.get_output(0))
    blob = builder.build_serialized_network(network, builder.create_builder_config())
    if blob is None:
        raise RuntimeError(f"TensorRT could not build the {what} test network")
    engine = trt.Runtime(logger).deserialize_cuda_engine(blob)
    context = engine.create_execution_context()
    dev = {n: t.contiguous().cuda() for n, t in feeds.items()}
    out = torch.empty(*out_shape, device="cuda")
    for name, t in dev.items():
        context.set_tensor_address(name, t.data_ptr())
    context.set_tensor_address(layer.get_output(0).name, out.data_ptr())
    stream = torch.cuda.current_stream()
    if not context.execute_async_v3(stream.cuda_stream):
        raise RuntimeError("TensorRT execution failed")
    stream.synchronize()
    return out


# --- registering a TensorRT face --------------------------------------------------------------------

_REGISTRATIONS: dict[str, tuple[object, BaseException | None]] = {}


def register_once(spec: PluginSpec, define: Callable[[], None]) -> None:
    """Run a face's `tensorrt.plugin` decorators (`define`) once per imported `tensorrt.plugin`.

    The plugin is marked before decorating: `@trtp.register` defines the op at once, so a
    failure in a later decorator would otherwise make the next call fail with "already has a
    definition" and hide the real error. Here a retry re-raises the first error instead.
    """
    import tensorrt.plugin as trtp

    state = _REGISTRATIONS.get(spec.plugin_id)
    if state is not None and state[0] is trtp.op:
        if state[1] is None:
            return
        raise RuntimeError(f"registering {spec.plugin_id} with tensorrt.plugin failed earlier in this process: "
                           f"{type(state[1]).__name__}: {state[1]}") from state[1]
    _REGISTRATIONS[spec.plugin_id] = (trtp.op, None)
    try:
        define()
    except Exception as e:
        _REGISTRATIONS[spec.plugin_id] = (trtp.op, e)
        raise


def register_trt_faces(ops=None, *, strict: bool = True) -> dict[str, str]:
    """Register vitdeploy's TensorRT faces (every one, or those of `ops`) with `tensorrt.plugin`; op -> "ok" or why not.

    `strict` (an engine build: the graph needs every plugin it holds) raises at the first failure;
    otherwise (bench loading a plan, which may use none of them) the status says why each one failed,
    e.g. a TensorRT before 10.9 has no `tensorrt.plugin`.
    """
    from vitdeploy.errors import VitdeployError

    status: dict[str, str] = {}
    for op in (TRT_FACES if ops is None else ops):
        if op not in TRT_FACES:
            if strict:
                raise VitdeployError(f"no TensorRT implementation registered for plugin {op}",
                                     "rebuild the ONNX with --plugins off")
            status[op] = "no TensorRT face"
            continue
        try:
            importlib.import_module(TRT_FACES[op]).register()
        except Exception as e:
            if strict:
                raise
            status[op] = (f"not available ({e.name})" if isinstance(e, ModuleNotFoundError) else
                          f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}")
            continue
        status[op] = "ok"
    return status
