"""Task types: what differs between the kinds of ranking_tasks rows, one TaskType per kind.

Every kind shares the handout and the submit path (app/labeling/submission.py): overlap, leases,
never twice, idempotent retries, skipped → 409, late submits, the next task in the same
transaction. What differs is how the task is shown (a template partial, the keys panel), which
fields its answer takes, and how that answer is stored: the TaskType's `recorder`
(app/labeling/recorders.py) either turns it into an ordinary Ranking (RankingRecorder with the
kind's `judgment`) or records something else. Routes, services and templates look the kind up here
(`task_type(kind)`) instead of branching on it, so a new kind is one entry in TASK_TYPES, one
template partial, and a `judgment` function (its answer becomes ranking groups) or a recorder.

  * "ranking": 4–9 completions to order, ties allowed (templates/labeling/_ranking.html).
  * "pairwise_eval": a blind evaluation (app/models/evaluation.py): two completions from two model
    versions, shown as "A" and "B" in the labeler's own shuffled display order, judged with a
    verdict (only a verdict: the page and the JSON API name no completion ids). A wins → [[a], [b]];
    tie → [[a, b]]; both bad → [[a, b]] with none_acceptable; the reason → the comment. Nothing
    shown says which version wrote which response.
  * "demonstration": the labeler writes the assistant's next turn for the prompt (a chat is
    continued); its one completion, if any, is a model draft they may start from (the edit
    distance from it is stored). Stored as a Demonstration (app/demonstrations/recorders.py):
    accepted at once, or pending review when the project has demonstration_review on.
  * "demonstration_review": a second labeler accepts, edits (the corrected text is stored beside
    the original) or rejects (with a reason) one pending demonstration
    (ranking_tasks.demonstration_id); no completions. Its author is barred from the task when it
    is created, so nobody reviews their own demonstration. Only accepted demonstrations train.
  * the feedback forms (app/labeling/form_types.py, issue 15), each a project's choice
    (projects.feedback_form) for its uploaded and round tasks: "pairwise" (a verdict as for
    pairwise_eval, stored as a Ranking), "likert", "good_bad" and "multi_aspect" (ratings per
    completion, stored as Feedback rows by app/labeling/rating_recorder.py). Every ranking and
    form kind takes optional per-completion `critiques`.
"""

from __future__ import annotations

from app.demonstrations.recorders import DemonstrationRecorder, ReviewRecorder, load_review
from app.demonstrations.service import DEMONSTRATION, DEMONSTRATION_REVIEW
from app.labeling.form_types import FORM_TYPES, PAIRWISE_CRITIQUE_KEYS
from app.labeling.judgments import VERDICTS, pairwise_judgment, ranking_judgment, verdict_of
from app.labeling.recorders import RankingRecorder
from app.labeling.schemas import FormInput, Submission
from app.labeling.task_type import TaskType
from app.labeling.task_type import keys_panel as _keys

__all__ = ["FormInput", "Submission", "TaskType", "VERDICTS", "verdict_of", "task_type", "TASK_TYPES"]

RANKING = "ranking"
PAIRWISE_EVAL = "pairwise_eval"


# ---- the registry -----------------------------------------------------------------------------


_RANKING_FIELDS = frozenset({"ranking", "verdict", "flags", "none_acceptable", "time_spent_ms", "comment", "critiques"})


TASK_TYPES: dict[str, TaskType] = {
    RANKING: TaskType(
        kind=RANKING,
        name="Ranking",
        template="labeling/_ranking.html",
        completions=(2, 9),
        takes_flags=True,
        keys=_keys(
            (
                "<kbd>Tab</kbd> <kbd>↑</kbd> <kbd>↓</kbd>",
                "focus a completion (<kbd>↑</kbd>/<kbd>↓</kbd> go to the previous/next one)",
            ),
            (
                "<kbd>Shift</kbd>+<kbd>↑</kbd> / <kbd>Shift</kbd>+<kbd>↓</kbd>",
                "move it up / down (also <kbd>Alt</kbd>+arrows)",
            ),
            (
                "<kbd>Space</kbd>",
                "pick it up, move with <kbd>↑</kbd>/<kbd>↓</kbd>, drop with <kbd>Space</kbd> or <kbd>Esc</kbd>",
            ),
            ("<kbd>1</kbd>…<kbd>9</kbd>", "move it to that place"),
            ("<kbd>T</kbd> or <kbd>=</kbd>", "tie it with the one above; again to split the tie"),
            ("<kbd>E</kbd>", "show more / less of a long completion"),
            (
                "<kbd>C</kbd>",
                "write a critique of the focused completion (optional); <kbd>Esc</kbd> goes back to its card",
            ),
            ("<kbd>Tab</kbd> inside a card", "reach its flags and buttons"),
            ("<kbd>Ctrl</kbd>+<kbd>Enter</kbd>", "submit the ranking"),
        ),
        title="Rank",
        done="ranked",
        blind=False,
        recorder=RankingRecorder(ranking_judgment, takes_flags=True, name="Ranking"),
        answer_fields=_RANKING_FIELDS,
        expects="`ranking` (groups of completion ids, best first)",
    ),
    PAIRWISE_EVAL: TaskType(
        kind=PAIRWISE_EVAL,
        name="Blind comparison",
        template="labeling/_pairwise.html",
        completions=(2, 2),
        takes_flags=False,
        keys=_keys(
            ("<kbd>A</kbd> / <kbd>B</kbd>", "response A / B is better"),
            ("<kbd>T</kbd>", "a tie: both are about as good"),
            ("<kbd>X</kbd>", "both are bad"),
            ("<kbd>R</kbd>", "write a reason (optional); <kbd>Esc</kbd> leaves the box"),
            PAIRWISE_CRITIQUE_KEYS,
            ("<kbd>Enter</kbd>", "submit the judgment (<kbd>Ctrl</kbd>+<kbd>Enter</kbd> from the reason box)"),
        ),
        title="Compare",
        done="judged",
        blind=True,
        recorder=RankingRecorder(pairwise_judgment, takes_flags=False, name="Blind comparison"),
        answer_fields=_RANKING_FIELDS,
        expects='a `verdict`: "A", "B", "tie" or "both_bad"',
    ),
    DEMONSTRATION: TaskType(
        kind=DEMONSTRATION,
        name="Demonstration",
        template="labeling/_demonstration.html",
        completions=(0, 1),
        takes_flags=False,
        keys=_keys(
            ("<kbd>W</kbd>", "write: focus the answer box"),
            ("<kbd>D</kbd>", "start from the model draft (when the task has one)"),
            ("<kbd>Esc</kbd>", "leave the answer box (so the letter keys work again)"),
            ("<kbd>P</kbd>", "preview the answer as it will be shown"),
            ("<kbd>Ctrl</kbd>+<kbd>Enter</kbd>", "submit the demonstration (also inside the box)"),
        ),
        title="Write",
        done="written",
        blind=False,
        recorder=DemonstrationRecorder(),
        answer_fields=frozenset({"response", "from_draft", "time_spent_ms"}),
        expects="`response`: the assistant's answer you wrote (markdown)",
    ),
    DEMONSTRATION_REVIEW: TaskType(
        kind=DEMONSTRATION_REVIEW,
        name="Demonstration review",
        template="labeling/_demonstration_review.html",
        completions=(0, 0),
        takes_flags=False,
        keys=_keys(
            ("<kbd>A</kbd>", "accept the demonstration as it is"),
            ("<kbd>E</kbd>", "edit it: its text goes into the box, your corrected version is stored"),
            ("<kbd>R</kbd>", "reject it: say why in the comment box"),
            ("<kbd>Esc</kbd>", "leave a text box"),
            ("<kbd>Ctrl</kbd>+<kbd>Enter</kbd>", "submit the review"),
        ),
        title="Review",
        done="reviewed",
        blind=False,
        recorder=ReviewRecorder(),
        answer_fields=frozenset({"decision", "reviewed_response", "comment", "time_spent_ms"}),
        expects='a `decision`: "accept", "edit" (with `reviewed_response`) or "reject" (with a `comment`)',
        load_extra=load_review,
    ),
    **FORM_TYPES,
}


def task_type(kind: str) -> TaskType:
    """The type of a ranking_tasks row's `kind`; LookupError for a kind this code does not know."""
    try:
        return TASK_TYPES[kind]
    except KeyError:
        raise LookupError(f"unknown task kind {kind!r}; known: {', '.join(TASK_TYPES)}") from None
