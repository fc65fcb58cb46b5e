"""Layer 5, ``dad``: one module per command; each parses its options and calls the library."""

from core.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
