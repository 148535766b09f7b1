"""The row contract: the moves a stage may make, enforced."""

from __future__ import annotations

import pytest

from jobs.rows import TRANSITIONS, Status, check_transition


def test_stages_may_only_make_the_moves_of_the_table():
    check_transition("decide", None, Status.UNCHANGED)
    check_transition("protect", Status.OK, Status.ERROR)
    check_transition("write", Status.MISSING, Status.PRUNED)
    check_transition("protect", Status.UNCHANGED, Status.UNCHANGED)  # not the stage's business: passes through
    for stage, before, after in (("protect", Status.OK, Status.PRUNED), ("write", Status.ERROR, Status.OK),
                                 ("protect", Status.UNCHANGED, Status.OK), ("decide", None, Status.PRUNED)):
        with pytest.raises(RuntimeError, match=f"stage '{stage}' may not move a row from"):
            check_transition(stage, before, after)
    assert set(TRANSITIONS) == {"decide", "detect", "protect", "write"}
