"""TensorRT's AOT launch done with the CUDA driver (vitdeploy.testing.driver_launch, benchmarks/aot_launch.py).

The argument packing and the compile half run here on the CPU; the launches are `gpu`-marked (they
need a CUDA driver) and also run, for every node at full size with timing, in benchmarks/gpu_suite.sh.
"""
import ctypes
import importlib
import sys
from pathlib import Path

import pytest

from vitdeploy.testing.driver_launch import pack_params

pytestmark = pytest.mark.contract  # the launch, as the CPU and (gpu-marked) the CUDA driver can show it
REPO = Path(__file__).resolve().parents[1]


def _bench():
    sys.path.insert(0, str(REPO))
    return importlib.import_module("benchmarks.aot_launch")


def test_pack_params_follows_the_ptx_signature():
    params = (".u64", ".u64", ".u32", ".u32", ".u64")
    p = pack_params(params, [0x7F0000001000, 0x7F0000002000, 22223, 300, 0x7F0000003000])
    assert len(p) == 5
    slots = ctypes.cast(p.address, ctypes.POINTER(ctypes.c_void_p))
    got = [ctypes.c_uint64.from_address(slots[0]).value, ctypes.c_uint64.from_address(slots[1]).value,
           ctypes.c_uint32.from_address(slots[2]).value, ctypes.c_uint32.from_address(slots[3]).value,
           ctypes.c_uint64.from_address(slots[4]).value]
    assert got == [0x7F0000001000, 0x7F0000002000, 22223, 300, 0x7F0000003000]
    assert [ctypes.sizeof(v) for v in p.values] == [8, 8, 4, 4, 8]  # the kernel copies 8/4 bytes per parameter


def test_pack_params_refuses_what_would_misalign_the_launch():
    with pytest.raises(ValueError, match="takes 3 parameters"):
        pack_params((".u64", ".u32", ".u64"), [1, 2])
    with pytest.raises(ValueError, match=r"parameter 1 \(.u32\): 4294967296 is out of range"):
        pack_params((".u64", ".u32", ".u64"), [1, 2**32, 3])
    with pytest.raises(TypeError, match=r"parameter 1 \(.u32\) needs an int"):
        pack_params((".u64", ".u32", ".u64"), [1, 2.5, 3])
    with pytest.raises(ValueError, match="PTX type .pred is not supported"):
        pack_params((".pred",), [1])


def test_aot_arguments_are_inputs_then_extras_then_outputs():
    class T:
        def __init__(self, p):
            self.p = p

        def data_ptr(self):
            return self.p

    assert _bench().aot_args([T(16), T(32), T(48)], [2], T(64)) == [16, 32, 48, 2, 64]


def test_dry_run_compiles_and_packs_what_tensorrt_would_launch(tmp_path):
    """The GPU script's CPU half on a full-size node: plugin layer -> PTX -> launch -> packed arguments."""
    import json

    from vitdeploy.plugins.window_attention.kernel import interpreter_active

    if interpreter_active():
        pytest.skip("Triton was imported with TRITON_INTERPRET=1 in this process")
    out = tmp_path / "aot.json"
    assert _bench().main(["--dry-run", "--arch", "90", "--cases", "convit_t", "--precisions", "fp16", "--jobs", "1",
                          "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 1 and rows[0]["problems"] == [] and rows[0]["target"]["target"] == "sm_90a"
    t1 = rows[0]["tactics"][0]
    assert t1["packed"] == 6 and t1["launch"]["extra"] == [196]  # qk, v, pos, gate | N | out
    assert t1["launch"]["grid"] == [4, 8 * 4, 1]  # cdiv(196, 64) x batch 8 * 4 heads


GPU_CASES = [("swin_t", "fp16"), ("swin_t", "fp32"), ("swin_b_384", "fp32"), ("convit_t", "fp16"), ("convit_t", "fp32"),
             ("deformable_detr", "fp16"), ("deformable_detr", "fp32"), ("halonet26t", "fp16"), ("halonet26t", "fp32")]


@pytest.mark.gpu
@pytest.mark.parametrize("case,precision", GPU_CASES, ids=[f"{c}-{p}" for c, p in GPU_CASES])
def test_driver_launch_matches_the_reference(case, precision):
    """One full-size node per case, every tactic: cuModuleLoadData + cuLaunchKernel with the plugin layer's
    grid/block/shared memory and argument order, no opt-in, against the PyTorch reference."""
    import torch

    bench = _bench()
    major, minor = torch.cuda.get_device_capability()
    prep = bench.prepare(case, 0, precision, major * 10 + minor, 2, warm_jit=False)
    assert prep["problems"] == []
    row = bench.run_prepared(prep, 2, reps=0)
    bad = [t for t in row["tactics"] if not t.get("correct")]
    assert not bad, bad
