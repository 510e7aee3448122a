"""`vitdeploy matrix`: build and benchmark model x precision x device type, here or on a Ray cluster.

A matrix file (TOML) expands into two kinds of work (`plan.py`):

- a **prepare** per (model, precision, batch range, export options): `vitdeploy build --no-engine`
  (export -> rewrite -> precision -> accuracy) or `vitdeploy export`. It is device independent,
  so it runs once and every device type reuses it; its steps are cached by `build`'s own step
  cache (`vitdeploy/pipeline/cache.py`), keyed by the content hash of their inputs.
- a **cell** per (suite, model, precision, device type): on a node of that device type, the
  engine step (`vitdeploy build` again in a copy of the prepared directory: every earlier step is
  a cache hit, only the engine is built for this GPU) and `vitdeploy bench`.

`execute.py` is what runs on a node (both runners call it; every step is a `vitdeploy` command in a
child process, so a crash or an out-of-memory kill is a failure of that cell, not of the worker);
`serial.py` runs the plan here, one cell at a time; `ray_runner.py` submits it to a Ray cluster as a
task graph scheduled by resources; `results.py` writes what comes back under `-o DIR`, decides what
`--resume` skips and merges the cells into one `vitdeploy.bench/3` file; `progress.py` is the live
table. `ray_test_cluster.py` starts a throwaway multi-node Ray cluster on one machine (tests, benchmarks).
"""
