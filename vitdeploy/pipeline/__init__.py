"""The one place stages are orchestrated: `vitdeploy build` (export -> rewrite -> precision -> accuracy
-> lint -> engine, each step cached), the single-stage commands (`export.py`, `rewrite.py`,
`calibrate.py`), the plugin-free graph `package` serves (`plugin_free.py`) and the builds `bench`
makes on the fly (`on_the_fly.py`).

It sits above `deploy/` (export, rewrite, engine) and `calibration/` (precision, INT8), because it
drives both; neither of them imports it. A stage's work is one function in those packages, called
from here by the build step and by the single-stage command alike.

Every step's output lives in the build directory and is keyed by a content hash
of everything it depends on (input file sha256, options, vitdeploy and tool
versions). A rerun with the same key reuses the output (after checking its
sha256), so changing `--fp16` redoes precision, accuracy and engine but not the
export. Keys chain through output hashes: a step whose input bytes did not
change stays cached even when an earlier step reran.
"""
from vitdeploy.pipeline.build import run_build
from vitdeploy.pipeline.cache import StepCache
from vitdeploy.pipeline.options import BuildOptions, BuildResult

__all__ = ["BuildOptions", "BuildResult", "StepCache", "run_build"]
