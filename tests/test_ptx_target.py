"""Which PTX vitdeploy compiles for TensorRT (architecture, pinned ISA, portability), how it reads PTX back,
and the stock MSDA plugin version by TensorRT version. No GPU, no TensorRT; one real Triton compile."""
import pytest

from vitdeploy.errors import VitdeployError
from vitdeploy.machine import stock_msda_version
from vitdeploy.plugins import ptx, ptx_target
from vitdeploy.plugins.msda.spec import STOCK_SPEC, STOCK_V1_SPEC, VITDEPLOY_SPEC, spec_for


@pytest.mark.parametrize("cuda,isa", [("11.8", 78), ("12.0", 80), ("12.4", 84), ("12.6", 85), ("12.8", 87),
                                      ("12.9", 88), ("13.0", 90), ("13.1", 91), (None, None), ("n/a", None)])
def test_driver_isa_follows_the_ptx_isa_release_table(cuda, isa):
    assert ptx_target.driver_isa(cuda) == isa


@pytest.mark.parametrize("arch,isa", [(80, 78), (87, 78), (89, 78), (90, 80), (100, 86), (120, 87)])
def test_pinned_isa_is_the_lowest_the_architecture_and_triton_accept(arch, isa, monkeypatch):
    monkeypatch.delenv("VITDEPLOY_PTX_ISA", raising=False)
    assert ptx_target.pinned_isa(arch) == isa


def test_pinned_isa_override_is_validated(monkeypatch):
    monkeypatch.setenv("VITDEPLOY_PTX_ISA", "8.7")
    assert ptx_target.pinned_isa(90) == 87
    monkeypatch.setenv("VITDEPLOY_PTX_ISA", "7.8")
    with pytest.raises(VitdeployError, match="below PTX ISA 8.0, the lowest sm_90 accepts"):
        ptx_target.pinned_isa(90)
    with pytest.raises(VitdeployError, match="no PTX ISA floor known for sm_95"):
        ptx_target.isa_floor(95)


def test_engine_targets(monkeypatch):
    monkeypatch.delenv("VITDEPLOY_PTX_ARCH", raising=False)
    monkeypatch.delenv("VITDEPLOY_PTX_ISA", raising=False)
    assert ptx_target.for_engine("none", 90).to_dict() == {"target": "sm_90a", "arch": 90, "ptx_isa": "8.0", "portable": False}
    assert ptx_target.for_engine("same_compute_capability", 87).name == "sm_87"
    hc = ptx_target.for_engine("ampere_plus", 90)  # finding 5: portable sm_80, not the builder's sm_90a
    assert (hc.name, hc.isa, hc.portable) == ("sm_80", 78, True)
    monkeypatch.setenv("VITDEPLOY_PTX_ARCH", "90")
    with pytest.raises(VitdeployError, match="with --hardware-compat ampere_plus: hardware-compatible engines need portable sm_80"):
        ptx_target.for_engine("ampere_plus", 90)
    with pytest.raises(VitdeployError, match="VITDEPLOY_PTX_ARCH=90 but the engine is built on a compute capability 8.7 GPU"):
        ptx_target.for_engine("none", 87)


def test_old_driver_is_refused_in_one_line():
    t = ptx_target.PtxTarget(100, 86)
    ptx_target.check_driver(t, "12.8")
    ptx_target.check_driver(t, None)  # unknown: TensorRT will say
    with pytest.raises(VitdeployError) as e:
        ptx_target.check_driver(t, "12.4")
    assert e.value.one_line() == ("this machine's CUDA driver (CUDA 12.4) JIT-compiles PTX ISA up to 8.4, but the plugin "
                                  "PTX for sm_100a is ISA 8.6 (update the NVIDIA driver, or rebuild with --plugins off)")


def test_compile_for_overrides_and_restores(monkeypatch):
    monkeypatch.setenv("VITDEPLOY_PTX_ARCH", "87")
    assert ptx_target.resolve().arch == 87
    with ptx_target.compile_for(ptx_target.PtxTarget(80, 70, portable=True)):
        assert ptx_target.resolve().name == "sm_80" and ptx_target.active().portable
    assert ptx_target.active() is None and ptx_target.resolve().name == "sm_87"


SAMPLE = """//
.version 8.0
.target sm_90a
.address_size 64
.extern .shared .align 16 .b8 global_smem[];
.shared .align 4 .b32 scratch[64];
.visible .entry k(
\t.param .u64 .ptr .global .align 16 k_param_0,
\t.param .u32 k_param_1,
\t.param .u64 .ptr .global .align 16 k_param_2
)
.reqntid 128, 1, 1
{
\tret;
}
"""


def test_ptx_facts_are_read_back():
    info = ptx.parse(SAMPLE)
    assert (info.entry, info.isa, info.target, info.arch, info.arch_specific) == ("k", 80, "sm_90a", 90, True)
    assert info.params == (".u64", ".u32", ".u64") and info.reqntid == (128, 1, 1) and info.static_shared == 256
    assert ptx.tensorrt_abi(1, 1, 1) == info.params
    assert ptx.problems(info, abi=ptx.tensorrt_abi(1, 1, 1), block=128, shared=1024, max_isa=80) == []


def test_ptx_problems_name_what_tensorrt_would_reject():
    info = ptx.parse(SAMPLE)
    bad = ptx.problems(info, abi=ptx.tensorrt_abi(2, 0, 1), block=256, shared=49152, max_isa=78, portable=True)
    assert len(bad) == 5
    assert "TensorRT passes ['.u64', '.u64', '.u64']" in bad[0]
    assert ".reqntid (128, 1, 1) but the launch uses block_x=256" in bad[1]
    assert "needs 49408 B of shared memory per block, more than the 49152 B" in bad[2]
    assert ".version 8.0 is newer than the pinned PTX ISA 7.8" in bad[3]
    assert "architecture-specific" in bad[4]


def test_triton_compiles_at_the_pinned_isa():
    """A real AOT compile (Triton runs its ptxas on the result, so the pinned ISA 7.8 must suffice for the code)."""
    from vitdeploy.plugins.msda import kernel

    if kernel.interpreter_active():
        pytest.skip("Triton was imported with TRITON_INTERPRET=1 in this process")
    name, text, meta = kernel.ptx_for_tensorrt(87, "fp16", kernel.LaunchConfig(num_levels=2, num_points=2, head_dim=16))
    info = ptx.parse(text, name)
    assert (info.target, info.isa) == ("sm_87", 78)  # Triton 3.8 alone would write .version 8.8
    assert info.params == ptx.tensorrt_abi(5, 3, 1) and info.reqntid[0] == meta.num_warps * 32


@pytest.mark.parametrize("trt,version", [(None, "1"), ("10.3.0.30", "1"), ("10.9.0.34", "1"), ("10.10.0.31", "1"),
                                         ("10.11.0.33", "2"), ("11.1.0", "2")])
def test_stock_msda_version_follows_the_target_tensorrt(trt, version):
    """Finding 3: MultiscaleDeformableAttnPlugin_TRT v2 exists only from TensorRT 10.11."""
    choice = stock_msda_version(trt)
    assert choice.version == version and choice.reason
    assert spec_for("stock", "plugin", choice.version) is (STOCK_SPEC if version == "2" else STOCK_V1_SPEC)
    assert spec_for("vitdeploy", "plugin", choice.version) is VITDEPLOY_SPEC
    assert spec_for("stock", "native", "2") is STOCK_V1_SPEC


def test_engine_compiles_plugins_for_the_build_gpu_or_portable(monkeypatch):
    from vitdeploy.deploy.engine import EngineSettings, plugin_ptx_target

    monkeypatch.delenv("VITDEPLOY_PTX_ARCH", raising=False)
    monkeypatch.delenv("VITDEPLOY_PTX_ISA", raising=False)
    aot = [{"kind": "vitdeploy AOT", "op": "WindowAttention"}]
    h100 = {"name": "NVIDIA H100", "compute_capability": "9.0"}
    assert plugin_ptx_target(EngineSettings(), [{"kind": "TensorRT stock", "op": "X"}], h100, "12.8") is None
    assert plugin_ptx_target(EngineSettings(), aot, h100, "12.8").name == "sm_90a"
    assert plugin_ptx_target(EngineSettings(hardware_compatibility="ampere_plus"), aot, h100, "12.8").name == "sm_80"
    with pytest.raises(VitdeployError, match=r"CUDA 11.8\) JIT-compiles PTX ISA up to 7.8, but the plugin PTX for sm_90a is ISA 8.0"):
        plugin_ptx_target(EngineSettings(), aot, h100, "11.8")


def test_a_stock_plugin_version_this_tensorrt_lacks_is_refused_before_parsing():
    """Finding 3 from the engine side: an ONNX rewritten for TensorRT >= 10.11 (v2) given to 10.9."""
    from types import SimpleNamespace

    from vitdeploy.deploy.engine import check_stock_plugins

    have = {("MultiscaleDeformableAttnPlugin_TRT", "1", "")}
    trt = SimpleNamespace(__version__="10.9.0.34", get_plugin_registry=lambda: SimpleNamespace(
        get_creator=lambda name, version, ns: object() if (name, version, ns) in have else None))
    v1 = {"kind": "TensorRT stock", "op": "MultiscaleDeformableAttnPlugin_TRT", "version": "1", "namespace": ""}
    check_stock_plugins(trt, [v1, {"kind": "vitdeploy AOT", "op": "WindowAttention", "version": "1"}])
    with pytest.raises(VitdeployError, match="TensorRT 10.9.0.34 has no MultiscaleDeformableAttnPlugin_TRT version 2"):
        check_stock_plugins(trt, [{**v1, "version": "2"}])
