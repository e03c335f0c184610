"""tpo_core: Target Policy Optimization and its baselines, for teaching and research.

The heart is three lines of math (see :mod:`tpo_core.objectives`)::

    u = standardize_scores(scores)                     # z-scores within a group
    q = softmax(log_softmax(old_log_probs) + u / eta)  # tilt the old group policy
    loss = -(q * log_softmax(log_probs)).sum(-1).mean()  # fit it by cross-entropy

Everything in :mod:`tpo_core.objectives` is available from the top level.

Module map (one course stage per subpackage; stages import only the shared
base, ``objectives`` and ``stats``, never each other; ``teaching`` sits on
top and may import any stage)::

    objectives    the math every stage shares: TPO's target and loss, every baseline loss
    stats         summaries every stage shares: mean and standard error, bootstrap intervals
    group/        one scored group: closed-form descent of PG, clip and TPO (notebook 01)
    bandits/      tabular (exact and sampled) and neural contextual bandits (02-03)
    tokens/       token tasks, the tiny transformer, rollouts, methods, training, grids (04-05)
    llm/          RLVR on Hugging Face causal LMs, verifiers, TRL's trainer with TPO (06-07)
    teaching/     what notebooks import: figures/, explorers/ (and their kernel-free twins),
                  exercises/, each by course stage
    __main__      the experiment command line: ``python -m tpo_core train|grid|summary``

docs/GLOSSARY.md names every method and term.
"""

from tpo_core.objectives import *  # noqa: F403 - the objective library is the top-level API
from tpo_core.objectives import __all__  # noqa: F401

__version__ = "0.2.0"
