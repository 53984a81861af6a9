"""`python -m nodegraph ...`: the same as the `nodegraph` command (for environments where the script
is not on PATH, e.g. a container's or a CI's venv)."""
from .launch import main

main()
