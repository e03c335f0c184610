"""The teaching layer on top of the course stages.

:mod:`~tpo_core.teaching.viz` turns data into plotly figures (no widgets),
:mod:`~tpo_core.teaching.widgets` wires live ipywidgets explorers to those
figures, and :mod:`~tpo_core.teaching.exercises` checks answers and names the
misconception. This layer may import any stage; no stage imports it.
"""
