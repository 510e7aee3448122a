"""Did TensorRT fuse each attention block? Run on a machine with TensorRT (trtexec on PATH).

    python benchmarks/attention_fusion.py build/swin_t_native build/vit_t --out benchmarks/results/attention_fusion.json

For each build directory (made by `vitdeploy build ... --no-engine` anywhere), runs the manifest's
`lint.layer_info_command` -- the trtexec line `build` prints in "Next:" (strongly typed, the build's shapes,
`--profilingVerbosity=detailed --exportLayerInfo=DIR/layer_info.json --skipInference`) -- then counts the
engine layers whose name or tactic mentions an mha/fmha (fused attention) kernel and compares that with the
attention blocks the lint found in the graph (`lint.attention`, each with its form). Without trtexec it
records why and exits 0: nothing here is faked. Not run in this repository's sessions (no TensorRT).
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

FUSED = re.compile(r"f?mha", re.IGNORECASE)


def layer_names(info: dict) -> list[str]:
    """Every string that names a layer or its tactic in trtexec's --exportLayerInfo JSON (format-agnostic)."""
    out = []

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                if isinstance(v, str) and k.lower() in ("name", "tacticname", "layertype", "metadata"):
                    out.append(v)
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, str):
            out.append(x)

    walk(info)
    return out


def check(build_dir: Path, timeout: int) -> dict:
    m = json.loads((build_dir / "manifest.json").read_text())
    lint = m.get("lint") or {}
    blocks = [a for a in lint.get("attention", []) if a.get("form") in ("fusible", "not fusible")]
    rec = {"build": str(build_dir), "model": (m.get("model") or {}).get("alias"),
           "plain_attention_blocks": len(blocks), "fusible_form": sum(a["form"] == "fusible" for a in blocks)}
    cmd = lint.get("layer_info_command")
    if not cmd:
        return {**rec, "skipped": "the manifest has no layer_info_command (vitdeploy plugins, or no plain attention)"}
    if shutil.which("trtexec") is None:
        return {**rec, "skipped": "trtexec is not on PATH (needs a TensorRT install)"}
    started = time.time()
    proc = subprocess.run(shlex.split(cmd), capture_output=True, text=True, timeout=timeout)
    rec["seconds"] = round(time.time() - started, 1)
    if proc.returncode != 0:
        return {**rec, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    path = Path(re.search(r"--exportLayerInfo=(\S+)", cmd).group(1))
    names = layer_names(json.loads(path.read_text()))
    fused = sorted({n for n in names if FUSED.search(n)})
    return {**rec, "fused_kernels": len(fused), "fused_names": fused[:50], "all_blocks_fused": len(fused) >= len(blocks)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("builds", nargs="+", type=Path)
    ap.add_argument("--out", default="benchmarks/results/attention_fusion.json")
    ap.add_argument("--timeout", type=int, default=1800)
    args = ap.parse_args()
    results = [check(b, args.timeout) for b in args.builds]
    for r in results:
        print(r.get("model"), {k: v for k, v in r.items() if k not in ("fused_names", "build")})
    Path(args.out).write_text(json.dumps({"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                          "trtexec": shutil.which("trtexec"), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
