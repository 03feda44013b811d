"""The feedback forms a project can choose (issue 15; projects.feedback_form), as task types.

A project's uploaded and round tasks are of its form's kind (`task_kind_for`). Each kind shares
the handout and submit path with every other (overlap, leases, never twice, idempotent retries,
the late-submit rule); what differs is here:

  * "pairwise": two completions shown as "A" and "B" in the labeler's own shuffled order (the
    sides are randomised per labeler and recorded as rankings.display_order), judged with a
    verdict "A", "B", "tie" or "both_bad", stored as a Ranking exactly like pairwise_eval.
    Blind: the page and the JSON API name no completion ids (uploads often list one model's
    completion first, so ids would hint at the source).
  * "likert": every completion rated 1..likert_points (labels from the project's settings).
  * "good_bad": every completion judged good or bad (KTO's unpaired data).
  * "multi_aspect": every completion rated on each likert-scale aspect, the completions ranked on
    each ranking-scale aspect, and (when the project asks) ranked overall.
The three rating forms store Feedback rows (app/labeling/rating_recorder.py). Every form, and
ranking, takes an optional free-text critique per completion (`critiques`).
"""

from __future__ import annotations

from functools import partial

from app.labeling.judgments import pairwise_judgment
from app.labeling.rating_recorder import RatingRecorder
from app.labeling.recorders import RankingRecorder
from app.labeling.task_type import TaskType, keys_panel
from app.models import FeedbackForm
from app.projects.forms_config import task_kind_for

__all__ = ["FORM_TYPES", "task_kind_for"]

PAIRWISE = FeedbackForm.pairwise.value
LIKERT = FeedbackForm.likert.value
GOOD_BAD = FeedbackForm.good_bad.value
MULTI_ASPECT = FeedbackForm.multi_aspect.value

PAIRWISE_FORM_FIELDS = frozenset(
    {"ranking", "verdict", "flags", "none_acceptable", "time_spent_ms", "comment", "critiques"}
)
_RATING_FIELDS = frozenset({"ratings", "critiques", "time_spent_ms", "comment"})


# The shortcuts static/js/rating.js gives the rating forms (and pairwise.js the pairwise one).
_CRITIQUE_KEY = ("<kbd>C</kbd>", "write a critique of it (optional); <kbd>Esc</kbd> leaves the box")
_ROW_KEYS = (
    ("<kbd>↑</kbd> / <kbd>↓</kbd>", "the previous / next completion"),
    _CRITIQUE_KEY,
    ("<kbd>Tab</kbd>", "reach a completion's text, choices and critique box in turn"),
    ("<kbd>Enter</kbd>", "submit (<kbd>Ctrl</kbd>+<kbd>Enter</kbd> from a text box)"),
)
PAIRWISE_CRITIQUE_KEYS = (
    "<kbd>C</kbd> / <kbd>Shift</kbd>+<kbd>C</kbd>",
    "write a critique of response A / B (optional); <kbd>Esc</kbd> leaves the box",
)

FORM_TYPES: dict[str, TaskType] = {
    PAIRWISE: TaskType(
        kind=PAIRWISE,
        name="Pairwise comparison",
        template="labeling/_pairwise.html",
        completions=(2, 2),
        takes_flags=False,
        keys=keys_panel(
            ("<kbd>A</kbd> / <kbd>B</kbd>", "response A / B is better"),
            ("<kbd>T</kbd>", "a tie: both are about as good"),
            ("<kbd>X</kbd>", "both are bad"),
            ("<kbd>R</kbd>", "write a reason (optional); <kbd>Esc</kbd> leaves the box"),
            PAIRWISE_CRITIQUE_KEYS,
            ("<kbd>Enter</kbd>", "submit the judgment (<kbd>Ctrl</kbd>+<kbd>Enter</kbd> from a text box)"),
        ),
        title="Compare",
        done="judged",
        blind=True,
        recorder=RankingRecorder(
            partial(pairwise_judgment, task="a pairwise task"), takes_flags=False, name="Pairwise comparison"
        ),
        answer_fields=PAIRWISE_FORM_FIELDS,
        expects='a `verdict`: "A", "B", "tie" or "both_bad" (optional `critiques` keyed "A" and "B")',
    ),
    LIKERT: TaskType(
        kind=LIKERT,
        name="Rating",
        template="labeling/_likert.html",
        completions=(1, 9),
        takes_flags=False,
        keys=keys_panel(
            ("<kbd>1</kbd>…<kbd>9</kbd>", "rate the completion in focus (1 = worst); focus moves to the next"),
            ("<kbd>←</kbd> / <kbd>→</kbd>", "one point lower / higher"),
            *_ROW_KEYS,
        ),
        title="Rate",
        done="rated",
        blind=False,
        recorder=RatingRecorder(LIKERT),
        answer_fields=_RATING_FIELDS,
        expects='`ratings`: [{"completion_id": id, "value": 1..likert_points}, ...], one per completion',
        shows_form=True,
    ),
    GOOD_BAD: TaskType(
        kind=GOOD_BAD,
        name="Good or bad",
        template="labeling/_good_bad.html",
        completions=(1, 9),
        takes_flags=False,
        keys=keys_panel(
            ("<kbd>G</kbd> / <kbd>B</kbd>", "the completion in focus is good / bad; focus moves to the next"),
            ("<kbd>←</kbd> / <kbd>→</kbd>", "switch between good and bad"),
            *_ROW_KEYS,
        ),
        title="Judge",
        done="judged",
        blind=False,
        recorder=RatingRecorder(GOOD_BAD),
        answer_fields=_RATING_FIELDS,
        expects='`ratings`: [{"completion_id": id, "value": "good" or "bad"}, ...], one per completion',
        shows_form=True,
    ),
    MULTI_ASPECT: TaskType(
        kind=MULTI_ASPECT,
        name="Multi-aspect rating",
        template="labeling/_multi_aspect.html",
        completions=(1, 9),
        takes_flags=False,
        keys=keys_panel(
            (
                "<kbd>1</kbd>…<kbd>9</kbd>",
                "rate the aspect in focus (1 = worst), or give a ranked aspect's place "
                "(1 = best; the same place ties); focus moves to the next",
            ),
            ("<kbd>←</kbd> / <kbd>→</kbd>", "move the choice left / right"),
            ("<kbd>↑</kbd> / <kbd>↓</kbd>", "the previous / next aspect, then completion"),
            *_ROW_KEYS[1:],
        ),
        title="Rate",
        done="rated",
        blind=False,
        recorder=RatingRecorder(MULTI_ASPECT),
        answer_fields=_RATING_FIELDS | {"aspect_rankings", "ranking"},
        expects=(
            "`ratings` with an `aspect` for each rated aspect, `aspect_rankings` for each ranked one, and "
            "`ranking` (overall) when the project asks for it"
        ),
        shows_form=True,
    ),
}
