"""Explorers: ipywidgets controls wired to the figures, one module per course stage, and
their kernel-free twins for pages with no Python behind them."""
