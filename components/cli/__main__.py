"""`python -m components.cli`: the same as the `vllm-deploy` console script."""

from components.cli import main

main()
