"""Entry point Pulumi runs for `pulumi up -s <stack>`; the program lives in components.program."""

from components.program import main

main()
