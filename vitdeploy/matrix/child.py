"""`python -m vitdeploy.matrix.child ARGS...`: the vitdeploy CLI in a child that dies with its parent.

A cell's commands run in child processes so that a crash, an out-of-memory kill or a hung TensorRT
build is that cell's failure, not the worker's. When the worker itself goes away (Ray cancels the
task with force, the node is drained), the child must go too, or it would hold the GPU while the
retried cell runs elsewhere: on Linux it asks the kernel for SIGKILL when its parent exits. This is
done here, in the fresh single-threaded child, rather than in a `preexec_fn` of the multi-threaded
Ray worker, where forking into Python code can deadlock.
"""
from __future__ import annotations

import os
import sys

PARENT_ENV = "VITDEPLOY_MATRIX_PARENT"


def die_with_parent() -> None:
    parent = int(os.environ.get(PARENT_ENV, "0") or 0)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(137)


if __name__ == "__main__":
    die_with_parent()
    from vitdeploy.cli import main

    main(sys.argv[1:])
