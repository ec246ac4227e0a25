"""The command line: parse arguments, call the core, print. Nothing else."""
