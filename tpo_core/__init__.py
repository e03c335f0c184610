"""tpo_core: Target Policy Optimization and its baselines, for teaching and research.

The heart is three lines of math (see :mod:`tpo_core.objectives`)::

    u = standardize_scores(scores)                     # z-scores within a group
    q = softmax(log_softmax(old_log_probs) + u / eta)  # tilt the old group policy
    loss = -(q * log_softmax(log_probs)).sum(-1).mean()  # fit it by cross-entropy

Everything in :mod:`tpo_core.objectives` is available from the top level.
"""

from tpo_core.objectives import *  # noqa: F403 - the objective library is the top-level API
from tpo_core.objectives import __all__  # noqa: F401

__version__ = "0.1.0"
