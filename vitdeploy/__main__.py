"""`python -m vitdeploy` runs the CLI (useful where the console script is not installed)."""
from vitdeploy.cli import main

main()
