"""Failure reasons in plain words, the provider's code beside them; anything not in the table as it was."""

import pytest

from webapp.provider.reasons import plain_reason


@pytest.mark.parametrize("stored, shown", [
    ("Not delivered: the provider reported UNDELIV (cause 1)", "Not delivered: number unreachable (UNDELIV, cause 1)"),
    ("Not delivered: the provider reported REJECTD (cause 2)",
     "Not delivered: rejected by the network (REJECTD, cause 2)"),
    ("REJECTD (cause 2)", "Not delivered: rejected by the network (REJECTD, cause 2)"),
    ("Not delivered: the provider reported EXPIRED", "Not delivered: the phone was not reachable before the message "
                                                     "expired (EXPIRED)"),
    ("Not delivered: the provider reported undelivered", "Not delivered: number unreachable (undelivered)"),
])
def test_known_states_read_plainly_with_their_code(stored, shown):
    """The meaning first, then the state word and cause code exactly as the provider sent them."""
    assert plain_reason(stored) == shown


@pytest.mark.parametrize("stored", [
    "Not delivered: the provider reported BLOCKD (cause 9)",  # a state the table doesn't know
    "MultiTEL refused the message: 'to' is not a number (cause 1004)",
    "The worker stopped while this message was being posted; it may have been sent.",
    "=HYPERLINK(\"http://evil\")", "", None,
])
def test_anything_else_stays_as_it_is(stored):
    assert plain_reason(stored) == stored

