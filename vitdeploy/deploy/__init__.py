"""Export, rewrite passes, engine build, runtimes and artifacts."""
