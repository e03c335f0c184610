"""Exercises with automatic checks, one module per notebook on one grading engine.

``check(name, answer)`` grades an answer and says why; ``question(name)``
prints the question; ``solution(name)`` the worked solution, for instructors
(nothing prints it by default). Exercise names start with their notebook's
number (``"01-predict-q"``); :mod:`.engine` holds the registry and the graders'
helpers, ``nb00`` ... ``nb07`` the exercises, which register themselves on import.
"""

from tpo_core.teaching.exercises import nb00, nb01, nb02, nb03, nb04, nb05, nb06, nb07  # noqa: F401
from tpo_core.teaching.exercises.engine import EXERCISES, KINDS, check, question, solution

__all__ = ["EXERCISES", "KINDS", "check", "question", "solution"]
