__version__ = "0.1.0"


def __getattr__(name):
    # `vitdeploy.Engine` without importing TensorRT (or numpy) when vitdeploy is imported.
    if name == "Engine":
        from vitdeploy.deploy.runtime import Engine

        return Engine
    raise AttributeError(f"module 'vitdeploy' has no attribute {name!r}")
