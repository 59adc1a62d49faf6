"""Command-line options and the per-protocol settings they select (protocols.py)."""
