"""`vitdeploy build`: export -> rewrite -> precision -> accuracy -> engine, each step cached.

The orchestrator sits above `deploy/` (export, rewrite, engine) and `calibration/`
(precision, INT8), because it drives both; neither of them imports it.

Every step's output lives in the build directory and is keyed by a content hash
of everything it depends on (input file sha256, options, vitdeploy and tool
versions). A rerun with the same key reuses the output (after checking its
sha256), so changing `--fp16` redoes precision, accuracy and engine but not the
export. Keys chain through output hashes: a step whose input bytes did not
change stays cached even when an earlier step reran.

Steps whose implementation is not installed (a rewrite pass, the INT8
calibrator) say so and are left out; the manifest records what ran.
"""
from vitdeploy.pipeline.build import run_build
from vitdeploy.pipeline.cache import StepCache
from vitdeploy.pipeline.options import BuildOptions, BuildResult

__all__ = ["BuildOptions", "BuildResult", "StepCache", "run_build"]
