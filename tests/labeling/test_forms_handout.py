"""The handout guarantees for every feedback form kind (issue 15), on SQLite and Postgres.

The tests of test_handout.py and test_submit.py that take `make_task_of_kind` run here again, each
with a task of the pairwise, likert, good_bad and multi_aspect forms (helpers.make_form_task): two
labelers per slot never, the same labeler never twice, leases, the sweep, idempotent retries, late
submits, 409s, skips. helpers.submit answers each form as its page does (helpers.ANSWERS)."""

from __future__ import annotations

from functools import partial

import pytest

from tests.labeling import test_handout, test_submit
from tests.labeling.helpers import make_form_task

FORM_KINDS = ("pairwise", "likert", "good_bad", "multi_aspect")

SHARED = {
    name: test
    for module in (test_handout, test_submit)
    for name, test in vars(module).items()
    if name.startswith("test_") and "make_task_of_kind" in test.__code__.co_varnames
}
assert len(SHARED) >= 15, sorted(SHARED)  # the guarantees are found, not silently skipped
globals().update(SHARED)  # collected here with this module's make_task_of_kind


@pytest.fixture(params=FORM_KINDS)
def make_task_of_kind(request):
    """`make(db, project)`: a task of each feedback form in turn (the project takes that form)."""
    return partial(make_form_task, kind=request.param)
