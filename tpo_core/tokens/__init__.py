"""Token tasks (notebooks 04-05): a tiny transformer writes H answer tokens after H prompt tokens.

Data flows one way through the modules::

    tasks (prompts, rewards) -> model (TinyTransformer, Muon + Adam) -> rollouts
      -> algorithms (one loss per method, by name) -> train (the loop, curves)
      -> replay (one frozen batch refitted), states (what each loss asks of one prefix state)
      -> grid (resumable grids of runs on disk, with provenance)
      -> table3 (final errors cell by cell, next to the paper's Table 3)

and ``replicas`` trains many seeds of one setting together (one process, a GPU's way).
"""

from tpo_core.tokens.algorithms import ALGORITHMS, get_algorithm
from tpo_core.tokens.train import TrainConfig, TrainResult, train

__all__ = ["ALGORITHMS", "TrainConfig", "TrainResult", "get_algorithm", "train"]
