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
    group         one scored group: closed-form descent of PG, clip and TPO (notebook 01)
    bandits/      tabular (exact and sampled) and neural contextual bandits (02-03)
    tokens/       token tasks, the tiny transformer, rollouts, methods, training, grids (04-05)
    llm/          RLVR on Hugging Face causal LMs, verifiers, TRL's trainer with TPO (06)
    teaching/     figures (viz), live explorers (widgets), exercises
    __main__      the experiment command line: ``python -m tpo_core train|grid``

docs/GLOSSARY.md names every method and term.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from tpo_core.objectives import *  # noqa: F403 - the objective library is the top-level API
from tpo_core.objectives import __all__  # noqa: F401

__version__ = "0.2.0"

# Module paths of release 0.1, kept importable (with a DeprecationWarning) for one release.
MOVED_MODULES = {
    "tpo_core.tasks": "tpo_core.tokens.tasks",
    "tpo_core.model": "tpo_core.tokens.model",
    "tpo_core.rollouts": "tpo_core.tokens.rollouts",
    "tpo_core.algorithms": "tpo_core.tokens.algorithms",
    "tpo_core.train": "tpo_core.tokens.train",
    "tpo_core.experiments": "tpo_core.tokens.experiments",
    "tpo_core.neural_bandit": "tpo_core.bandits.neural",
    "tpo_core.verifiers": "tpo_core.llm.verifiers",
    "tpo_core.integrations": "tpo_core.llm",
    "tpo_core.integrations.trl": "tpo_core.llm.trl",
    "tpo_core.viz": "tpo_core.teaching.viz",
    "tpo_core.widgets": "tpo_core.teaching.widgets",
    "tpo_core.exercises": "tpo_core.teaching.exercises",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as a copy of the module's namespace at its new path."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED_MODULES else None

    def exec_module(self, module):
        new = MOVED_MODULES[module.__name__]
        warnings.warn(
            f"{module.__name__} has moved to {new}; the old path will be removed in the next "
            "release",
            DeprecationWarning,
            stacklevel=2,
        )
        target = importlib.import_module(new)
        module.__dict__.update({k: v for k, v in vars(target).items() if not k.startswith("__")})
        module.__doc__ = target.__doc__
        module.__path__ = []  # so that old submodule paths (integrations.trl) resolve too


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModuleFinder())
