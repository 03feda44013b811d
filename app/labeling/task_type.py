"""The TaskType record: what differs between kinds of ranking_tasks rows (the registry of kinds is
app/labeling/task_types.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup
from sqlalchemy.orm import Session

from app.labeling.content import TaskContent
from app.labeling.errors import InvalidSubmission
from app.labeling.recorders import Recorder
from app.labeling.schemas import FormInput, Submission, form_family


@dataclass(frozen=True)
class TaskType:
    """What differs between kinds of ranking_tasks rows: how a task shows (template, keys, title,
    blind), which answer fields it reads (the rest refused by name) and how the answer is stored
    (`recorder`). The handout and the submit path around it are the same for every kind."""

    kind: str
    name: str
    """What a labeler calls it ("Ranking", "Blind comparison")."""
    template: str
    """The partial that renders the task's form (included by templates/labeling/_task.html)."""
    completions: tuple[int, int]
    """How many completions a task of this kind has (fewest, most)."""
    takes_flags: bool
    """Whether the project's flags are offered (and accepted) on this kind's tasks."""
    keys: tuple[tuple[Markup, Markup], ...]
    """The keyboard shortcuts panel: (keys, what they do), as HTML made only of our own text."""
    title: str
    """The labeling page's title while a task of this kind is shown ("Rank", "Compare")."""
    done: str
    """What the labeler did to a task, for the progress line ("3 ranked by you")."""
    blind: bool
    """Which completion is which stays hidden from the labeler: no completion id reaches the page or
    the JSON API (ids are sequential, so they hint at which model version was generated first), and
    the answer names sides ("A", "B"), never ids."""
    recorder: Recorder = field(repr=False)
    """The storage hook (app/labeling/recorders.py): checks the answer (422 naming the field) and
    stores it: as a Ranking (RankingRecorder, given the kind's `judgment`) or as something else."""
    answer_fields: frozenset[str] = field(repr=False)
    """The submitted fields this kind reads; any other one sent non-empty is refused by name."""
    expects: str = ""
    """What to send instead, for that refusal ("`response`: the answer you wrote")."""
    shows_form: bool = False
    """The project's form settings (Likert points and labels, aspects) shape this kind's page and
    answer (TaskOut.form); the rating forms."""
    load_extra: Callable[[Session, TaskContent], Any] | None = field(default=None, repr=False)
    """What the task shows besides its prompt and completions (TaskView.extra): the demonstration
    a review task reviews. None: nothing."""

    def refuse_foreign_fields(self, data: Submission) -> None:
        """InvalidSubmission naming the first field this kind does not take (a ranking sent to a
        demonstration task, a response sent to a ranking task)."""
        if isinstance(data, FormInput):
            sent = {form_family(name) for name, value in data.fields.items() if value}
            sent |= {"flag"} if data.flags else set()
        else:
            sent = {name for name in type(data).model_fields if getattr(data, name)}
        foreign = sorted(sent - self.answer_fields - ({"flag"} if "flags" in self.answer_fields else set()))
        if foreign:
            name = foreign[0]
            raise InvalidSubmission(f"{name}: a {self.name.lower()} task takes no `{name}`; send {self.expects}")


def keys_panel(*rows: tuple[str, str]) -> tuple[tuple[Markup, Markup], ...]:
    """The keyboard shortcuts panel of a kind, from our own HTML strings (never user text)."""
    return tuple((Markup(keys), Markup(what)) for keys, what in rows)
