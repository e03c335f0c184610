"""One scored group under the microscope: the target's anatomy and logit descent.

Notebook 01 is built on this stage. A *group* is K candidates with old
probabilities ``p_old`` and raw scores ``s``; the policy restricted to the
group is ``softmax(z)`` over free logits ``z``, started at ``log p_old``.

* ``target``: :func:`group_view` takes the group apart (``u``, ``q`` and the TPO
  gradient ``p - q``, along whose opposite ``q - p`` descent moves);
  :func:`target_family`, :func:`ratio_box`, :func:`random_group` and
  :func:`maximise_kl_objective` (``q`` as the KL-regularised optimum, found numerically).
* ``descent``: :func:`descend_group` runs E epochs of plain gradient descent on ``z``
  under policy gradient, the PPO/GRPO clipped surrogate, or TPO, on free logits or on
  shared features; :func:`pg_endpoint` is PG's end point in closed form;
  :func:`settling_lr` is the largest step at which TPO's descent settles on ``q``;
  :func:`descend_shared` runs several groups on one parameter vector.
* ``sweeps``: :func:`endpoint_map` and :func:`group_panel` sweep learning rates,
  epochs and groups.
"""

from tpo_core.group.descent import (
    DESCENT_METHODS,
    Trajectory,
    descend_group,
    descend_groups,
    descend_shared,
    group_gradient,
    pg_endpoint,
    random_features,
    settling_lr,
)
from tpo_core.group.sweeps import EndpointMap, GroupPanel, endpoint_map, group_panel
from tpo_core.group.target import (
    CLIP_EPS,
    GroupView,
    group_view,
    maximise_kl_objective,
    random_group,
    ratio_box,
    target_family,
)

__all__ = [
    "CLIP_EPS",
    "DESCENT_METHODS",
    "EndpointMap",
    "GroupPanel",
    "GroupView",
    "Trajectory",
    "descend_group",
    "descend_groups",
    "descend_shared",
    "endpoint_map",
    "group_gradient",
    "group_panel",
    "group_view",
    "maximise_kl_objective",
    "pg_endpoint",
    "random_features",
    "random_group",
    "ratio_box",
    "settling_lr",
    "target_family",
]
