"""HaloAttention: reference vs timm's HaloAttn, the ORT face, the Triton kernel (CPU interpreter), AOT PTX, TensorRT."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from timm.layers.halo_attn import HaloAttn

from vitdeploy.plugins.halo_attention.reference import halo_attention, inputs_from_timm
from vitdeploy.plugins.halo_attention.spec import SPEC

REPO = Path(__file__).resolve().parents[1]


def _halo(dim, dim_out, heads, block, halo, stride=1, dim_head=None, avg_down=False, scale_pos_embed=False, seed=0):
    """timm HaloAttn with weights large enough that the relative logits and the halo padding move the output."""
    torch.manual_seed(seed)
    m = HaloAttn(dim, dim_out, num_heads=heads, dim_head=dim_head, block_size=block, halo_size=halo, stride=stride,
                 avg_down=avg_down, scale_pos_embed=scale_pos_embed).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    return m


def _through_reference(m, x, **override):
    with torch.no_grad():
        attrs, th, tw = inputs_from_timm(m)
        attrs.update(override)
        return m(x), m.pool(halo_attention(m.q(x), m.kv(x), th, tw, **attrs)), attrs


TIMM_CASES = {
    # id: (HaloAttn kwargs, input H, W)
    "1-block": (dict(dim=32, dim_out=32, heads=2, block=8, halo=2), 8, 8),
    "4-blocks": (dict(dim=32, dim_out=32, heads=2, block=4, halo=1), 8, 8),
    "16-blocks-halo3": (dict(dim=16, dim_out=32, heads=4, block=4, halo=3), 16, 16),
    "2x3-blocks-non-square": (dict(dim=32, dim_out=32, heads=2, block=4, halo=2), 8, 12),
    "stride2": (dict(dim=32, dim_out=64, heads=2, block=8, halo=3, stride=2), 16, 16),
    "stride2-dim-head": (dict(dim=32, dim_out=64, heads=4, block=4, halo=1, stride=2, dim_head=8), 8, 8),
    "avg-down": (dict(dim=32, dim_out=32, heads=2, block=4, halo=1, stride=2, avg_down=True), 8, 8),
    "scale-pos-embed": (dict(dim=32, dim_out=32, heads=2, block=4, halo=2, scale_pos_embed=True), 12, 12),
    "scale-pos-embed-stride2": (dict(dim=16, dim_out=32, heads=2, block=8, halo=2, stride=2, scale_pos_embed=True), 16, 16),
}


@pytest.mark.parametrize("case", list(TIMM_CASES))
def test_reference_matches_timm_halo_attn(case):
    kw, h, w = TIMM_CASES[case]
    m = _halo(**kw, seed=len(case))
    x = torch.randn(2, kw["dim"], h, w)
    want, got, attrs = _through_reference(m, x)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() < 2e-5 * max(1.0, want.abs().max().item())
    if kw.get("avg_down"):
        assert attrs["block_stride"] == 1 and type(m.pool).__name__ == "AvgPool2d"  # the pool stays outside
    if kw.get("stride") == 2 and not kw.get("avg_down"):
        assert attrs["block_stride"] == 2


def test_scale_pos_embed_and_relative_logits_matter():
    """The two scale conventions and the relative tables each change the output: the cases above test something."""
    m = _halo(32, 32, 2, 4, 2, scale_pos_embed=True, seed=1)
    x = torch.randn(1, 32, 12, 12)
    want, _, attrs = _through_reference(m, x)
    _, other, _ = _through_reference(m, x, scale_pos_embed=0)
    assert (other - want).abs().max().item() > 1e-2
    with torch.no_grad():
        zero = torch.zeros_like(m.pos_embed.height_rel)
        no_rel = halo_attention(m.q(x), m.kv(x), zero, zero, **attrs)
    assert (no_rel - want).abs().max().item() > 1e-2


def test_padded_halo_keys_take_part_in_the_softmax():
    """timm zero-pads kv and does not mask: on a one-block map, 80 of the 144 keys are padding whose
    logit is the relative term alone; excluding them from the softmax gives another answer."""
    from vitdeploy.plugins.halo_attention.reference import relative_logits

    m = _halo(32, 32, 2, 8, 2, seed=3)
    x = torch.randn(1, 32, 8, 8)
    with torch.no_grad():
        want = m(x)
        attrs, th, tw = inputs_from_timm(m)
        q = m.q(x).reshape(1, 2, 16, 64).transpose(-1, -2)  # [B, heads, 64 queries, d]
        kv = torch.nn.functional.pad(m.kv(x), [2, 2, 2, 2]).reshape(1, 2, 32, 144).transpose(-1, -2)
        k, v = kv[..., :16], kv[..., 16:]
        logits = q @ k.transpose(-1, -2) * attrs["scale"] + relative_logits(q, th, tw, 12)
        inside = torch.zeros(12, 12, dtype=torch.bool)
        inside[2:10, 2:10] = True
        unmasked = (logits.softmax(-1) @ v).transpose(-1, -2).reshape(1, 32, 8, 8)
        masked = (logits.masked_fill(~inside.reshape(-1), float("-inf")).softmax(-1) @ v).transpose(-1, -2).reshape(1, 32, 8, 8)
    assert (unmasked - want).abs().max().item() < 2e-5 * want.abs().max().item()
    assert (masked - want).abs().max().item() > 1e-2


def test_reference_rejects_mismatched_shapes():
    attrs = dict(block_size=4, halo_size=1, num_heads=2, dim_head_qk=16, dim_head_v=16, scale=0.25,
                 scale_pos_embed=0, block_stride=1)
    with pytest.raises(ValueError, match="do not fit heads=2"):
        halo_attention(torch.zeros(1, 32, 8, 8), torch.zeros(1, 32, 8, 8), torch.zeros(11, 16), torch.zeros(11, 16), **attrs)
    with pytest.raises(ValueError, match=r"must be \[11, 16\]"):
        halo_attention(torch.zeros(1, 32, 8, 8), torch.zeros(1, 64, 8, 8), torch.zeros(9, 16), torch.zeros(11, 16), **attrs)
    with pytest.raises(ValueError, match="block_stride 3"):
        halo_attention(torch.zeros(1, 32, 8, 8), torch.zeros(1, 64, 8, 8), torch.zeros(11, 16), torch.zeros(11, 16),
                       **dict(attrs, block_stride=3))


def test_spec_is_discoverable_like_the_other_plugins():
    from vitdeploy.plugins import ORT_FACES, TRT_FACES
    from vitdeploy.plugins.ort import load_ort_face

    assert SPEC.plugin_id == "vitdeploy::HaloAttention" and SPEC.version == "1" and SPEC.domain == "vitdeploy"
    assert ORT_FACES["HaloAttention"].endswith("halo_attention.ort")
    assert TRT_FACES["HaloAttention"].endswith("halo_attention.trt")
    assert load_ort_face("HaloAttention").SPEC is SPEC
    attrs = SPEC.node_attrs(block_size=8, halo_size=3, num_heads=8, dim_head_qk=16, dim_head_v=16, scale=0.25,
                            scale_pos_embed=0, block_stride=2)
    assert attrs["plugin_namespace"] == "vitdeploy" and attrs["plugin_version"] == "1"
    assert list(attrs)[:8] == list(SPEC.attrs)  # registration order: TensorRT passes them positionally


# --- ONNX Runtime face ---------------------------------------------------------------------------


def _one_node_model(q_shape, kv_shape, r, dqk, out_shape, attrs, dtype):
    node = helper.make_node(SPEC.name, ["q", "kv", "height_rel", "width_rel"], ["out"], domain=SPEC.domain,
                            **SPEC.node_attrs(**attrs))
    graph = helper.make_graph(
        [node], "halo",
        [helper.make_tensor_value_info("q", dtype, ["B", *q_shape[1:]]),
         helper.make_tensor_value_info("kv", dtype, ["B", *kv_shape[1:]]),
         helper.make_tensor_value_info("height_rel", dtype, [r, dqk]),
         helper.make_tensor_value_info("width_rel", dtype, [r, dqk])],
        [helper.make_tensor_value_info("out", dtype, ["B", *out_shape[1:]])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(SPEC.domain, 1)])
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("np_dtype,onnx_dtype,tol", [(np.float32, TensorProto.FLOAT, 1e-5), (np.float16, TensorProto.FLOAT16, 3e-3)])
def test_ort_face_matches_reference(np_dtype, onnx_dtype, tol):
    from vitdeploy.onnxrt import session

    heads, dqk, dv, block, halo, stride = 2, 16, 32, 8, 3, 2
    attrs = dict(block_size=block, halo_size=halo, num_heads=heads, dim_head_qk=dqk, dim_head_v=dv, scale=dqk ** -0.5,
                 scale_pos_embed=1, block_stride=stride)
    r = 2 * (block + 2 * halo) - 1
    rng = np.random.default_rng(0)
    feeds = {
        "q": rng.standard_normal((3, heads * dqk, 8, 8)).astype(np_dtype),
        "kv": rng.standard_normal((3, heads * (dqk + dv), 16, 16)).astype(np_dtype),
        "height_rel": (0.5 * rng.standard_normal((r, dqk))).astype(np_dtype),
        "width_rel": (0.5 * rng.standard_normal((r, dqk))).astype(np_dtype),
    }
    model = _one_node_model(feeds["q"].shape, feeds["kv"].shape, r, dqk, (3, heads * dv, 8, 8), attrs, onnx_dtype)
    (got,) = session(model).run(None, feeds)
    want = halo_attention(*(torch.from_numpy(v.astype(np.float32)) for v in feeds.values()), **attrs).numpy()
    assert got.dtype == np_dtype and got.shape == (3, heads * dv, 8, 8)
    assert np.abs(got.astype(np.float32) - want).max() < tol * max(1.0, np.abs(want).max())


# --- Triton kernel under the CPU interpreter -----------------------------------------------------
# triton.language's reductions are jitted when triton is first imported, so the interpreter must be
# on before that; a child process makes that independent of which tests imported triton first.

KERNEL_CASES = [
    # (batch, H, W, block, halo, stride, heads, dqk, dv, scale_pos_embed, dtype, tactic)
    (2, 8, 8, 4, 1, 1, 2, 16, 16, 0, "float32", 1),  # 4 blocks of 16 queries, 36 keys: one key tile of 32 + tail
    (1, 16, 16, 8, 2, 1, 2, 16, 32, 1, "float16", 1),  # halonet26t stage 3 geometry, dqk != dv, scale_pos_embed
    (1, 16, 16, 8, 3, 1, 1, 32, 32, 0, "float16", 2),  # halo 3: 196 keys in 4 tiles, BLOCK_M 32 (2 query tiles)
    (2, 16, 16, 8, 3, 2, 2, 16, 16, 0, "float32", 2),  # stride 2: 16 queries per block against 196 keys
    (1, 8, 8, 8, 2, 1, 1, 16, 16, 0, "float16", 5),  # one block (every key tile has padding), BLOCK_N 128
    (1, 8, 16, 4, 2, 1, 1, 16, 16, 1, "float32", 3),  # non-square map, BLOCK_M 64 clamped to 16
    (1, 16, 16, 8, 2, 2, 1, 16, 64, 0, "float16", 3),  # stride 2, dv 64 (eca_halonext26ts stage 4 dims)
]

_CHILD = textwrap.dedent(
    """
    import json, sys, torch
    from vitdeploy.plugins.halo_attention.kernel import halo_attention_triton, interpreter_active
    from vitdeploy.plugins.halo_attention.reference import halo_attention
    assert interpreter_active()
    results = []
    for B, H, W, bs, halo, s, heads, dqk, dv, spe, dt, tactic in json.loads(sys.argv[1]):
        g = torch.Generator().manual_seed(H * 100 + halo * 10 + s)
        dtype = getattr(torch, dt)
        r = 2 * (bs + 2 * halo) - 1
        q = torch.randn(B, heads * dqk, H // s, W // s, generator=g).to(dtype)
        kv = torch.randn(B, heads * (dqk + dv), H, W, generator=g).to(dtype)
        th = (0.5 * torch.randn(r, dqk, generator=g)).to(dtype)
        tw = (0.5 * torch.randn(r, dqk, generator=g)).to(dtype)
        attrs = dict(block_size=bs, halo_size=halo, num_heads=heads, dim_head_qk=dqk, dim_head_v=dv,
                     scale=dqk ** -0.5, scale_pos_embed=spe, block_stride=s)
        out = halo_attention_triton(q, kv, th, tw, tactic=tactic, **attrs)
        want = halo_attention(q.double(), kv.double(), th.double(), tw.double(), **attrs)
        no_rel = halo_attention(q.double(), kv.double(), 0 * th.double(), 0 * tw.double(), **attrs)
        results.append(dict(err=(out.double() - want).abs().max().item(), scale=want.abs().max().item(),
                            dtype=str(out.dtype), shape=list(out.shape), rel_effect=(want - no_rel).abs().max().item()))
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def kernel_results():
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(KERNEL_CASES)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", range(len(KERNEL_CASES)),
                         ids=[f"{c[1]}x{c[2]}-b{c[3]}-h{c[4]}-s{c[5]}-{c[10]}-t{c[11]}" for c in KERNEL_CASES])
def test_triton_kernel_matches_reference_on_interpreter(kernel_results, case):
    B, H, W, bs, halo, s, heads, dqk, dv, spe, dt, _ = KERNEL_CASES[case]
    r = kernel_results[case]
    assert r["shape"] == [B, heads * dv, H // s, W // s] and r["dtype"] == f"torch.{dt}"
    tol = 2e-5 if dt == "float32" else 3e-3
    assert r["err"] < tol * max(1.0, r["scale"]), r
    assert r["rel_effect"] > 20 * tol  # the relative logits really move the output


def test_launcher_refuses_cpu_tensors_without_interpreter():
    from vitdeploy.plugins.halo_attention import kernel

    if kernel.interpreter_active():
        pytest.skip("interpreter is on in this process")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        kernel.halo_attention_triton(torch.zeros(1, 32, 8, 8), torch.zeros(1, 64, 8, 8), torch.zeros(23, 16),
                                     torch.zeros(23, 16), block_size=8, halo_size=2, num_heads=2, dim_head_qk=16,
                                     dim_head_v=16, scale=0.25, scale_pos_embed=0, block_stride=1)


def test_config_refuses_maps_that_do_not_tile():
    from vitdeploy.plugins.halo_attention import kernel

    with pytest.raises(ValueError, match="not a multiple of block_size 8"):
        kernel.make_config(height=12, width=16, block_size=8, halo_size=2, block_stride=1, num_heads=2, dim_head_qk=16,
                           dim_head_v=16, scale=0.25, scale_pos_embed=0)


# --- ahead-of-time PTX ---------------------------------------------------------------------------

AOT = textwrap.dedent("""
    import json, os, subprocess, sys
    from vitdeploy.plugins.ptx import entry_params, ptxas_path
    from vitdeploy.plugins.halo_attention import kernel as K
    ptxas = ptxas_path()
    res = []
    for arch, dt, tactic, (hw, bs, halo, s, heads, dqk, dv) in json.loads(sys.argv[1]):
        cfg = K.make_config(height=hw, width=hw, block_size=bs, halo_size=halo, block_stride=s, num_heads=heads,
                            dim_head_qk=dqk, dim_head_v=dv, scale=dqk ** -0.5, scale_pos_embed=0, dtype=dt, tactic=tactic)
        name, ptx, md = K.ptx_for_tensorrt(arch, dt, cfg)
        asm = None
        if ptxas:
            target = ptx.split(".target", 1)[1].split()[0].strip(",")  # sm_87, or sm_90a on Hopper
            proc = subprocess.run([ptxas, f"-arch={target}", "-o", os.devnull, "-"], input=ptx, capture_output=True, text=True)
            asm = proc.returncode == 0 or proc.stderr[-500:]
        res.append({"arch": arch, "dtype": dt, "tactic": tactic, "name": name, "entry": entry_params(ptx, name),
                    "target": ".target sm_%d" % arch in ptx, "shared": md.shared, "num_warps": md.num_warps,
                    "warps": cfg.num_warps, "mma": "mma.sync" in ptx or "wgmma" in ptx, "assembles": asm})
    print(json.dumps(res))
""")


def test_aot_ptx_for_jetson_orin_and_hopper_every_tactic():
    from vitdeploy.plugins.halo_attention.kernel import TACTICS

    # sm_90: every tactic at the largest head dims any HaloNet uses (64/64, halo 3: 196 keys), where shared
    # memory peaks; sm_87 (Jetson Orin): the defaults and stride-2 blocks (16 queries). The sweep over every
    # stage shape x tactic x arch is `benchmarks/kernels/halo_attention.py --ptx-only` (CPU, JSON).
    widest = (16, 8, 3, 1, 8, 64, 64)
    strided = (16, 8, 3, 2, 8, 64, 64)
    cases = [[90, dt, t, widest] for dt in ("fp16", "fp32") for t in range(1, len(TACTICS[dt]) + 1)]
    cases += [[87, "fp16", 1, widest], [87, "fp32", 1, strided]]
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    proc = subprocess.run([sys.executable, "-c", AOT, json.dumps(cases)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(res) == len(cases)
    for r in res:
        assert r["name"] == "halo_attention_kernel" and r["target"], r
        # the entry TensorRT launches takes exactly: q, kv, height_rel, width_rel, batch, out
        assert r["entry"] == [".u64", ".u64", ".u64", ".u64", ".u32", ".u64"], r
        assert r["num_warps"] == r["warps"]
        assert r["shared"] <= 48 * 1024, r  # launchable without the dynamic shared-memory opt-in
        if r["dtype"] == "fp16":
            assert r["mma"], r  # tensor-core dots
        assert r["assembles"] in (None, True), r["assembles"]  # None: Triton ships no ptxas here


@pytest.mark.gpu
@pytest.mark.parametrize("dtype_name,tol", [("float16", 3e-3), ("float32", 1e-4)])
@pytest.mark.parametrize("batch,hw,halo,stride,heads,dqk,dv", [
    (1, 16, 2, 1, 8, 32, 32),  # halonet26t stage 3
    (8, 16, 2, 2, 8, 64, 64),  # halonet26t stage 4, strided queries
    (3, 32, 3, 1, 4, 32, 32),  # halonet50ts stage 2
    (2, 8, 2, 1, 8, 16, 64),  # eca_halonext26ts stage 4, one block
])
def test_kernel_on_cuda_matches_reference(dtype_name, tol, batch, hw, halo, stride, heads, dqk, dv):
    """Every tactic, compiled by the JIT on the GPU, at HaloNet stage shapes."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    import triton

    from vitdeploy.plugins.halo_attention import kernel

    if not isinstance(kernel.halo_attention_kernel, triton.runtime.JITFunction):
        pytest.skip("the kernel was imported under TRITON_INTERPRET=1 in this process")
    dt = getattr(torch, dtype_name)
    g = torch.Generator().manual_seed(batch * hw)
    r = 2 * (8 + 2 * halo) - 1
    q = torch.randn(batch, heads * dqk, hw // stride, hw // stride, generator=g).to("cuda", dt)
    kv = torch.randn(batch, heads * (dqk + dv), hw, hw, generator=g).to("cuda", dt)
    th, tw = (0.5 * torch.randn(r, dqk, generator=g)).to("cuda", dt), (0.5 * torch.randn(r, dqk, generator=g)).to("cuda", dt)
    attrs = dict(block_size=8, halo_size=halo, num_heads=heads, dim_head_qk=dqk, dim_head_v=dv, scale=dqk ** -0.5,
                 scale_pos_embed=0, block_stride=stride)
    want = halo_attention(q.double(), kv.double(), th.double(), tw.double(), **attrs)
    for tactic in range(1, len(kernel.TACTICS["fp16" if dt == torch.float16 else "fp32"]) + 1):
        got = kernel.halo_attention_triton(q, kv, th, tw, tactic=tactic, **attrs)
        assert got.dtype == dt and (got.double() - want).abs().max().item() < tol * max(1.0, want.abs().max().item()), tactic


# --- TensorRT --------------------------------------------------------------------------------------


@pytest.mark.trt
@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 3])
def test_tensorrt_plugin_matches_reference(batch):
    pytest.importorskip("tensorrt.plugin", reason="TensorRT with tensorrt.plugin (>= 10.9) is not installed")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from vitdeploy.plugins.halo_attention import trt as face

    heads, dqk, dv, block, halo = 2, 16, 32, 8, 3
    r = 2 * (block + 2 * halo) - 1
    g = torch.Generator().manual_seed(batch)
    q = torch.randn(batch, heads * dqk, 8, 8, generator=g)
    kv = torch.randn(batch, heads * (dqk + dv), 16, 16, generator=g)
    th, tw = 0.5 * torch.randn(r, dqk, generator=g), 0.5 * torch.randn(r, dqk, generator=g)
    attrs = dict(block_size=block, halo_size=halo, num_heads=heads, dim_head_qk=dqk, dim_head_v=dv,
                 scale=dqk ** -0.5, scale_pos_embed=0, block_stride=2)
    got = face.run_one_node(q, kv, th, tw, **attrs)
    want = halo_attention(q, kv, th, tw, **attrs)
    assert (got.cpu() - want).abs().max().item() < 1e-4
