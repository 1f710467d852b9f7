"""GroupedStrategy hooks every grouped method inherits."""

from ecolora.strategies.grouping import GroupedStrategy


def test_default_replan_keeps_the_plans() -> None:
    """The hierarchical loop calls ``replan`` every round: a grouped method without its own
    re-planning keeps the plans of ``form_groups`` (HierFedLoRA overrides it)."""
    assert GroupedStrategy.replan(object(), 3, {0: [1, 2]}) is False  # type: ignore[arg-type]
