"""The catalogue of methods: every method's name, label, colour, equation, family, default epochs,
settings and the stages that run it. It imports nothing.

Every list of methods in the package is read from here: each stage's registry
(:func:`implemented`), the command line's choices, ``RLVRConfig``'s validation,
the figures' colours and labels, and the glossary's table (a test compares
them). Adding a method is one row here plus one function in each stage that runs
it; a stage that lacks the function of a method the catalogue says it runs fails
at import, naming both.

The stages:

* ``one_group``: closed-form descent on one group's logits (notebook 01);
* ``single_context``, ``multi_context``: the exact tabular bandits (02);
* ``neural_bandit``: the neural contextual bandit (03), and ``failed_sample``, the
  closed-form weight each method puts on a failed sample there;
* ``tokens``: the token tasks' training loop (04-05); ``state_push``, one prefix
  state's push in closed form (04);
* ``llm``: the RLVR loop on a causal language model (06-07);
* ``trl``: TRL's trainers (``TPOTrainer`` here, ``GRPOTrainer`` with the ``trl``
  settings of the row otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass, field

STAGES = (
    "one_group",
    "single_context",
    "multi_context",
    "neural_bandit",
    "failed_sample",
    "tokens",
    "state_push",
    "llm",
    "trl",
)

FAMILIES = {
    "closed_form": "an exact update on known probabilities; nothing is sampled",
    "single": "one sample per context, advantages from a batch baseline",
    "sequence": "K whole answers per prompt scored as a group",
    "token": "K next-token candidates at each prefix state scored as a group",
}


@dataclass(frozen=True)
class Method:
    """One row of the catalogue.

    ``settings`` are the method's own defaults, passed to its loss by every stage
    (``eta``: TPO's temperature; ``clip_low``/``clip_high``: the ratio's clip range,
    ``1 - clip_low`` to ``1 + clip_high``; ``beta``: the weight of its KL to the
    snapshot). ``aggregation`` says what its loss is a mean over: ``groups``,
    ``sequences`` (the G*K answers), ``tokens`` (every real token of the batch) or
    ``constant_length`` (token sums divided by G*K times the longest allowed length).
    ``trl``: the ``GRPOConfig`` settings that run it in TRL's ``GRPOTrainer``
    (None: TRL has no such update, or, for ``tpo``, this package's ``TPOTrainer``).
    """

    name: str
    label: str
    color: str
    equation: str  # the glossary's "update (loss)" column
    family: str
    stages: tuple[str, ...]
    epochs: int = 4
    settings: dict = field(default_factory=dict)
    aggregation: str | None = None  # sequence- and token-level methods only
    paper: str = ""  # the glossary's "the paper calls it" column, or the method's own paper
    trl: dict | None = None

    @property
    def tempered(self) -> bool:
        """Takes TPO's temperature ``eta``."""
        return "eta" in self.settings


TPO = "`q = softmax(log_softmax(l_old) + u / eta)`"
CLIP = "`-min(rho A, clip(rho) A)`"

CATALOGUE: tuple[Method, ...] = (
    Method(
        "ce",
        "CE (oracle)",
        "#444444",
        "supervised cross-entropy to the correct action: direction `e_y - pi`",
        "closed_form",
        ("multi_context",),
        paper="CE (oracle)",
    ),
    Method(
        "pg",
        "PG (REINFORCE)",
        "#1f77b4",
        "`-A l`, `A = r - b`; `b` = 0.5 (tabular), `sum_a pi(a)^2` (neural bandit: the chance "
        "that two samples of `pi` agree, not the expected reward `pi(y)`), the batch mean "
        "reward at the same answer position (token tasks)",
        "single",
        (
            "one_group",
            "single_context",
            "multi_context",
            "neural_bandit",
            "failed_sample",
            "tokens",
        ),
        paper="PG / REINFORCE",
    ),
    Method(
        "dg",
        "DG",
        "#2ca02c",
        "`-(w A) l` with the gate `w = sigmoid(A * (-log pi(a)) / eta)`; one epoch per batch",
        "single",
        ("single_context", "multi_context", "neural_bandit", "failed_sample", "tokens"),
        epochs=1,
        paper="DG (Delightful Policy Gradient)",
    ),
    Method(
        "ppo",
        "PPO",
        "#17becf",
        f"{CLIP} per token, position-baseline advantages",
        "single",
        ("tokens",),
        settings=dict(clip_low=0.2, clip_high=0.2),
        aggregation="tokens",
        paper="PPO",
    ),
    Method(
        "clipped",
        "PPO/GRPO clipped",
        "#7b4ea3",
        "PPO's clipped surrogate on one group's logits with `A = u`, no KL",
        "closed_form",
        ("one_group",),
        paper="the clipped surrogate",
    ),
    Method(
        "grpo",
        "GRPO",
        "#7b4ea3",
        "`A = u` (z-scores with `std + 1e-8`), the clipped surrogate on the **whole answer's** "
        "ratio `rho = pi(y|x) / pi_old(y|x)`, plus `beta * k3` to the snapshot (`beta = 0.04`). "
        "In the bandits a group is the batch of samples of one context (tabular) or the "
        "minibatch (neural: the paper's single-sample GRPO), and one epoch makes the surrogate "
        "plain `-A l`",
        "sequence",
        ("single_context", "multi_context", "neural_bandit", "failed_sample", "tokens"),
        settings=dict(clip_low=0.2, clip_high=0.2, beta=0.04),
        aggregation="sequences",
        paper="GRPO (Table 3)",
    ),
    Method(
        "grpo_no_kl",
        "GRPO (no KL)",
        "#c5b0d5",
        "`grpo` with `beta = 0`",
        "sequence",
        ("tokens",),
        settings=dict(clip_low=0.2, clip_high=0.2, beta=0.0),
        aggregation="sequences",
        paper="GRPO, no KL",
    ),
    Method(
        "grpo_masked",
        "GRPO (flat groups masked)",
        "#3b2a57",
        "`grpo` averaged over informative groups only (zero-variance groups dropped)",
        "sequence",
        ("tokens",),
        settings=dict(clip_low=0.2, clip_high=0.2, beta=0.04),
        aggregation="sequences",
        paper="masking zero-variance groups",
    ),
    Method(
        "grpo_per_token",
        "GRPO (per-token ratio)",
        "#9467bd",
        "the clipped surrogate with a ratio **per token**, `rho_t = pi(y_t|.) / pi_old(y_t|.)`, "
        "the answer's `A` on each of its tokens, mean over tokens (plus `beta * k3`)",
        "sequence",
        ("tokens", "llm", "trl"),
        settings=dict(clip_low=0.2, clip_high=0.2, beta=0.04),
        aggregation="tokens",
        paper="GRPO as LLM trainers (verl, TRL) run it",
        trl=dict(loss_type="bnpo"),
    ),
    Method(
        "grpo_token",
        "GRPO (token)",
        "#7b4ea3",
        "`grpo` with one group per prefix state (next-token candidates)",
        "token",
        ("tokens", "state_push"),
        settings=dict(clip_low=0.2, clip_high=0.2, beta=0.04),
        aggregation="tokens",
        paper="GRPO_token",
    ),
    Method(
        "dr_grpo",
        "Dr. GRPO",
        "#8c6d31",
        "`A = r - mean(r)` (no division by the std), the per-token clipped surrogate, token "
        "sums divided by a constant length (`G K T_max`), no KL",
        "sequence",
        ("tokens", "llm", "trl"),
        settings=dict(clip_low=0.2, clip_high=0.2, beta=0.0),
        aggregation="constant_length",
        paper="Dr. GRPO (Liu et al. 2025, arXiv 2503.20783)",
        trl=dict(loss_type="dr_grpo", scale_rewards="none", beta=0.0),
    ),
    Method(
        "dapo",
        "DAPO",
        "#d62728",
        "`A = u`, the per-token clipped surrogate with an asymmetric clip "
        "`clip(rho_t, 1 - 0.2, 1 + 0.28)`, mean over every token of the batch, no KL",
        "sequence",
        ("tokens", "llm", "trl"),
        settings=dict(clip_low=0.2, clip_high=0.28, beta=0.0),
        aggregation="tokens",
        paper="DAPO's loss (Yu et al. 2025, arXiv 2503.14476)",
        trl=dict(loss_type="dapo", epsilon=0.2, epsilon_high=0.28, beta=0.0),
    ),
    Method(
        "gspo",
        "GSPO",
        "#e377c2",
        "`A = u`, the clipped surrogate on the sequence ratio `s = exp(mean_t log rho_t)`, "
        "clipped to `[1 - 3e-4, 1 + 4e-4]`, mean over answers, no KL",
        "sequence",
        ("tokens", "llm", "trl"),
        settings=dict(clip_low=3e-4, clip_high=4e-4, beta=0.0),
        aggregation="sequences",
        paper="GSPO (Zheng et al. 2025, arXiv 2507.18071)",
        trl=dict(
            importance_sampling_level="sequence",
            loss_type="grpo",
            epsilon=3e-4,
            epsilon_high=4e-4,
            beta=0.0,
        ),
    ),
    Method(
        "cispo",
        "CISPO",
        "#bcbd22",
        "`-sg(min(rho_t, 5)) A log pi(y_t|.)` with `A = u`: the clipped importance weight, "
        "without gradient, on every token's log-probability, so no token loses its gradient "
        "(the bound 5 is ScaleRL's, arXiv 2510.13786, as TRL recommends); mean over tokens, no KL",
        "sequence",
        ("tokens", "llm", "trl"),
        settings=dict(clip_high=4.0, beta=0.0),
        aggregation="tokens",
        paper="CISPO (MiniMax-M1, 2025, arXiv 2506.13585)",
        trl=dict(loss_type="cispo", epsilon_high=5.0, beta=0.0),
    ),
    Method(
        "rloo",
        "RLOO",
        "#393b79",
        "`-A l` on the answer's log-probability with the leave-one-out baseline "
        "`A_i = r_i - mean_{j != i} r_j`; one epoch per batch (on-policy), mean over answers",
        "sequence",
        ("tokens", "llm"),
        epochs=1,
        aggregation="sequences",
        paper="RLOO (Ahmadian et al. 2024, arXiv 2402.14740)",
    ),
    Method(
        "group_pg",
        "group-PG",
        "#8c564b",
        "the same candidates and `u`, as scalar weights: `-sum_i u_i l_i`",
        "sequence",
        ("neural_bandit", "tokens"),
        aggregation="groups",
        paper="group-PG (ablation)",
    ),
    Method(
        "tpo",
        "TPO",
        "#e8710a",
        f"{TPO}, loss `-sum_i q_i log softmax(l)_i`; gradient on the group logits `p - q`",
        "sequence",
        (
            "one_group",
            "single_context",
            "multi_context",
            "neural_bandit",
            "failed_sample",
            "tokens",
            "llm",
            "trl",
        ),
        settings=dict(eta=1.0),
        aggregation="groups",
        paper="TPO",
    ),
    Method(
        "tpo_no_anchor",
        "TPO (no anchor)",
        "#ffbb78",
        "`tpo` without `p_old`: `q = softmax(u / eta)`",
        "sequence",
        ("tokens",),
        settings=dict(eta=1.0),
        aggregation="groups",
        paper="TPO, no anchor (ablation)",
    ),
    Method(
        "tpo_token",
        "TPO (token)",
        "#e8710a",
        "`tpo` with one group per prefix state: the K next-token candidates of that state",
        "token",
        ("tokens", "state_push"),
        settings=dict(eta=1.0),
        aggregation="groups",
        paper="TPO_token",
    ),
)

METHODS: dict[str, Method] = {m.name: m for m in CATALOGUE}


def get_method(name: str, stage: str | None = None) -> Method:
    """The catalogue's row for ``name``, or a ValueError naming the choices (of ``stage``)."""
    choices = implemented(stage) if stage else tuple(METHODS)
    if name not in choices:
        where = f" in {stage}" if stage else ""
        raise ValueError(f"unknown method {name!r}{where}; choose one of {', '.join(choices)}")
    return METHODS[name]


def implemented(stage: str) -> tuple[str, ...]:
    """The names of the methods ``stage`` runs, in the catalogue's order."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; the stages are {', '.join(STAGES)}")
    return tuple(m.name for m in CATALOGUE if stage in m.stages)


def registry(stage: str, functions: dict) -> dict:
    """``{name: functions[name]}`` for every method ``stage`` runs, in the catalogue's order.

    Raises at once (so at import) if ``functions`` lacks one of them or holds a
    method the catalogue does not give this stage.
    """
    names = implemented(stage)
    missing = [n for n in names if n not in functions]
    extra = [n for n in functions if n not in names]
    if missing or extra:
        raise RuntimeError(
            f"stage {stage!r} and the method catalogue disagree: the catalogue says it runs "
            f"{missing} but it has no function for them; it has functions for {extra}, "
            "which the catalogue does not give it"
        )
    return {n: functions[n] for n in names}


def glossary_rows() -> list[str]:
    """The glossary's table of methods, one Markdown row per method (docs/GLOSSARY.md)."""
    runs = {
        "one_group": "one group (01)",
        "single_context": "bandits (02)",
        "multi_context": "bandits (02)",
        "neural_bandit": "neural bandit (03)",
        "tokens": "token tasks (04-05)",
        "llm": "LLM loop (06)",
        "trl": "TRL (06)",
    }
    rows = []
    for m in CATALOGUE:
        where = ", ".join(dict.fromkeys(runs[s] for s in m.stages if s in runs))
        rows.append(f"| `{m.name}` | {m.equation} | {where} | {m.paper} |")
    return rows


COLORS = {m.name: m.color for m in CATALOGUE}
LABELS = {m.name: m.label for m in CATALOGUE}
