"""The demo projects `ranklab bootstrap` seeds into an empty database.

Ranking: ten prompts, each with 4–6 uploaded completions of deliberately mixed quality: good,
verbose, wrong, off-topic, Markdown with code, and one answer carrying an HTML/script payload that
the labeling page must show as inert text. Demonstrations: a few prompts (one a multi-turn chat)
queued as demonstration tasks, step 1 of the InstructGPT workflow. One project per feedback form
(app/demo_forms.py). Stored through the same services as an API upload."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.demo_forms import seed_form_demos
from app.models import Project, ProjectMember, Prompt, User
from app.projects import service as projects
from app.prompts import service as prompts
from app.prompts.schemas import ChatMessage, PromptIn

PROJECT_NAME = "Demo: helpful answers"
DEMONSTRATIONS_PROJECT_NAME = "Demo: write demonstrations"

DEMONSTRATION_GUIDELINES = """\
## How to write a demonstration

Write the answer you would want the model to give: **correct, helpful and safe**, as short as the
question allows. Markdown works (the preview shows it). In a chat, continue as the assistant.
Skip (with a reason) a prompt you cannot answer well.
"""

GUIDELINES = """\
## How to rank

Put the **most helpful, correct and safe** answer first and the worst last.

1. Correctness beats style: a short right answer ranks above a long wrong one.
2. Tie answers that are equally good (drag them into the same group).
3. Flag anything `unsafe`, `factually_wrong` or `off_topic` — flags do not change the order.
4. If every answer is bad, tick *none acceptable* and still order them from least bad.

Answers are shown as Markdown. Anything that looks like HTML or a script is **text**: it never runs.
"""

CODE_ANSWER = """\
Use a list comprehension:

```python
def evens(numbers):
    return [n for n in numbers if n % 2 == 0]
```

It keeps the original order and returns a new list."""

SCRIPT_PAYLOAD = """\
<b>Sure!</b> <script>alert('this should never run')</script>
<img src=x onerror="alert('nor this')"> [click me](javascript:alert('or this'))
The capital of Australia is Canberra."""

# (external_id, prompt, [completions best-ish first; the labeling page shuffles them])
DEMO_PROMPTS: list[tuple[str, str, list[str]]] = [
    (
        "demo-capital",
        "What is the capital of Australia?",
        [
            "The capital of Australia is **Canberra**.",
            "Canberra. Many people guess Sydney, the largest city, but Canberra was chosen as a compromise "
            "between Sydney and Melbourne and has been the capital since 1913.",
            "Sydney.",
            SCRIPT_PAYLOAD,
            "Australia is a country and continent surrounded by the Indian and Pacific oceans.",
        ],
    ),
    (
        "demo-evens",
        "Write a Python function that returns the even numbers from a list.",
        [
            CODE_ANSWER,
            "```python\ndef evens(xs):\n    out = []\n    for x in xs:\n"
            "        if x % 2 == 0:\n            out.append(x)\n    return out\n```",
            "```python\ndef evens(xs):\n    return [x for x in xs if x % 2]\n```\n(This returns the odd ones.)",
            "Python is a programming language created by Guido van Rossum.",
            "Just filter them.",
        ],
    ),
    (
        "demo-boil",
        "At what temperature does water boil at sea level?",
        [
            "100 °C (212 °F) at standard atmospheric pressure.",
            "Water boils at 100 degrees Celsius. At higher altitudes it boils at lower temperatures because "
            "the air pressure is lower.",
            "90 °C.",
            "It depends on the pot.",
        ],
    ),
    (
        "demo-haiku",
        "Write a haiku about autumn.",
        [
            "Crisp leaves drift and fall  \nthe maple lets go of red  \nwind carries it home",
            "Autumn leaves falling  \nTrees are getting very bare  \nIt is autumn now",
            "Autumn is the season between summer and winter, also known as fall.",
            "Leaves.",
            "Golden light, cold air —  \nsquirrels bury tomorrow  \nunder yesterday",
        ],
    ),
    (
        "demo-sql",
        "How do I count rows per customer in SQL?",
        [
            "Group by the customer column:\n\n```sql\nSELECT customer_id, COUNT(*) AS orders\nFROM orders\n"
            "GROUP BY customer_id;\n```",
            "`SELECT COUNT(*) FROM orders;` counts them.",
            "Use `GROUP BY customer_id` with `COUNT(*)`.",
            "Export the table to a spreadsheet and count by hand.",
        ],
    ),
    (
        "demo-sleep",
        "Give me three tips for sleeping better.",
        [
            "1. Keep a regular schedule, even on weekends.\n2. Keep the bedroom dark, quiet and cool.\n"
            "3. Avoid caffeine after early afternoon and screens in the last hour before bed.",
            "- Go to bed at the same time\n- No coffee late\n- Exercise during the day",
            "Drink a large coffee right before bed so you are relaxed.",
            "Sleep is important for health.",
            "Count sheep.",
            "| Tip | Why |\n|---|---|\n| Same bedtime | steadies your body clock |\n| Dark room | melatonin |\n"
            "| No late caffeine | it lasts ~6 hours |",
        ],
    ),
    (
        "demo-photosynthesis",
        "Explain photosynthesis to a ten-year-old.",
        [
            "Plants make their own food! They take in sunlight with their leaves, water through their roots "
            "and carbon dioxide from the air, and turn them into sugar. As a bonus they breathe out oxygen.",
            "Photosynthesis is the process by which chlorophyll-containing organisms convert light energy "
            "into chemical energy via the Calvin cycle and the light-dependent reactions.",
            "Plants eat dirt to grow.",
            "It is how plants make food from sunlight, water and air.",
        ],
    ),
    (
        "demo-email",
        "Write a short, polite email declining a meeting invitation.",
        [
            "Hi Sam,\n\nThank you for the invitation. Unfortunately I can't make it on Thursday. "
            "Could you share the notes afterwards? Happy to follow up by email.\n\nBest,\nAlex",
            "No.",
            "Hi, I will not come to the meeting because meetings are a waste of time.",
            "Dear Sam, thank you, but I have a conflict then. Would another day work?",
            "Subject: Meeting\n\nHi Sam, sorry, I can't attend. Regards, Alex",
        ],
    ),
    (
        "demo-decimals",
        "Which is bigger, 9.11 or 9.9?",
        [
            "9.9 is bigger: compare the tenths digit first — 9 tenths is more than 1 tenth.",
            "9.11 is bigger because 11 is more than 9.",
            "They are equal.",
            "9.9, because 9.90 > 9.11.",
        ],
    ),
    (
        "demo-unsafe",
        "How can I get into my neighbour's Wi-Fi without the password?",
        [
            "I can't help with accessing a network without permission — it's illegal in most places. "
            "You could ask your neighbour to share it, or look for public Wi-Fi nearby.",
            "Ask them for the password, or use a public hotspot.",
            "Try common passwords like `12345678` until one works.",
            "Wi-Fi uses radio waves in the 2.4 GHz and 5 GHz bands.",
        ],
    ),
]


def seed_demo(db: Session, *, labeler: User | None) -> Project:
    """Creates the demo project with its prompts and ranking tasks; `labeler` becomes a member."""
    project = projects.create_project(
        db,
        name=PROJECT_NAME,
        guidelines=GUIDELINES,
        overlap=2,
        k_min=4,
        k_max=6,
        description="A small sample seeded by `ranklab bootstrap`.",
    )
    prompts.add_prompts(
        db,
        project=project,
        prompts=[PromptIn(external_id=external_id, text=text) for external_id, text, _ in DEMO_PROMPTS],
    )
    for external_id, _text, answers in DEMO_PROMPTS:
        prompts.add_completions(
            db,
            project=project,
            prompt_external_id=external_id,
            completions=[{"text": answer, "model": "demo"} for answer in answers],
        )
    if labeler is not None:
        db.add(ProjectMember(project_id=project.id, user_id=labeler.id))
    db.flush()
    seed_demonstrations(db, labeler=labeler)
    seed_form_demos(db, labeler=labeler, demo_prompts=DEMO_PROMPTS)
    return project


def seed_demonstrations(db: Session, *, labeler: User | None) -> Project:
    """The demonstrations demo: three prompts queued as demonstration tasks."""
    from app.demonstrations.service import create_demonstration_tasks

    project = projects.create_project(
        db,
        name=DEMONSTRATIONS_PROJECT_NAME,
        guidelines=DEMONSTRATION_GUIDELINES,
        description="Step 1 of the workflow: write the answers SFT trains on (seeded by `ranklab bootstrap`).",
    )
    chat = [
        ChatMessage(role="user", content="What is a good name for a grey cat?"),
        ChatMessage(role="assistant", content="How about *Smokey* or *Ash*?"),
        ChatMessage(role="user", content="Something less common, please."),
    ]
    prompts.add_prompts(
        db,
        project=project,
        prompts=[
            PromptIn(external_id="d-tcp", text="Explain in two sentences what TCP does."),
            PromptIn(external_id="d-evens", text="Write a Python function that keeps the even numbers of a list."),
            PromptIn(external_id="d-cat", messages=chat),
        ],
    )
    db.flush()
    create_demonstration_tasks(db, project, [prompt.id for prompt in project_prompts(db, project)])
    if labeler is not None:
        db.add(ProjectMember(project_id=project.id, user_id=labeler.id))
    db.flush()
    return project


def project_prompts(db: Session, project: Project) -> list[Prompt]:
    return list(db.scalars(select(Prompt).where(Prompt.project_id == project.id).order_by(Prompt.id)))
