"""Figures: data in, plotly figure out (no widgets, no state), one module per course stage."""
