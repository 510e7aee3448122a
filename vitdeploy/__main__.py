"""`python -m vitdeploy` runs the CLI (useful where the console script is not installed).

Guarded: a spawned child process (the export of a model over the external-data threshold runs in one)
imports the parent's main module again as `__mp_main__`, and must not run the CLI a second time."""
from vitdeploy.cli import main

if __name__ == "__main__":
    main()
