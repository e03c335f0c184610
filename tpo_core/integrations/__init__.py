"""Bridges to other training libraries (optional dependencies, imported on demand)."""
