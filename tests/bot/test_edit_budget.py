"""Each channel's edit allowance goes to results first."""

from __future__ import annotations

from bot.messages import EditBudget


def test_budget_refuses_optional_edits_past_the_allowance_but_never_results():
    """Five edits fit a window; a sixth progress edit is skipped, a result still goes, other channels are unaffected."""
    budget = EditBudget(per_window=5, window=60)

    assert all(budget.spend(1) for _ in range(5))
    assert not budget.spend(1)
    assert budget.spend(1, force=True)
    assert budget.spend(2)


def test_budget_refills_after_the_window():
    """Edits older than the window no longer count."""
    budget = EditBudget(per_window=1, window=0.0)

    assert budget.spend(1)
    assert budget.spend(1)
