"""Evaluation: held-out loss, multiple-choice scoring, preference accuracy and named suites.

Scorers only: this package imports nothing of ``ecolora.sim``. :mod:`ecolora.eval.heldout`
(which re-draws a run's split with ``ecolora.sim.setup``) is imported from its module.
"""

from ecolora.eval.harness import evaluate_with_lm_eval
from ecolora.eval.loss import held_out_loss, perplexity
from ecolora.eval.multiple_choice import choice_logprobs, score_multiple_choice
from ecolora.eval.preference import preference_accuracy, preference_metrics
from ecolora.eval.suites import (
    BIGBENCH_MC_TASKS,
    SUITES,
    Suite,
    get_suite,
    load_suite,
    register_suite,
    run_suite,
)

__all__ = [
    "BIGBENCH_MC_TASKS",
    "SUITES",
    "Suite",
    "choice_logprobs",
    "evaluate_with_lm_eval",
    "get_suite",
    "held_out_loss",
    "load_suite",
    "perplexity",
    "preference_accuracy",
    "preference_metrics",
    "register_suite",
    "run_suite",
    "score_multiple_choice",
]
