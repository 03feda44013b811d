"""The RLAIF variant of `ranklab simulate` (`--control ai_labels`): the project's AI judge labels
the training rounds instead of the team (issue 16 §3).

The project gets the offline judge (the bundled SmolLM2 scoring each answer alone,
`local_pointwise`) and overlap 1, and its rounds are AI-labelled (`labeling.source = "judge"`,
`judge_rounds` = the simulation's rounds), so each goes generate → judge → train on its own. The
team still labels the final round (measuring the last policy's answers) and judges the blind
evaluation, so the variant's win rate vs base compares with the team-labelled run's on equal
terms. Each judged round's record is read back from the product's rankings export: the judge's
orders, and the gold of the answers it ranked (so the "ceiling" column is the judge's agreement
with gold).
"""

from __future__ import annotations

import json

from app.simulation.gold import gold_reward, length_controlled, parts
from app.simulation.server import Admin
from app.simulation.tasks import parse, words
from app.simulation.team import RoundRecord

AI_LABELS = "ai_labels"


def prepare_ai_labelled(admin: Admin, project_id: int, *, model_path: str = "") -> None:
    """Overlap 1 (the judge's one ranking completes a task) and the project's judge: the offline
    one, a model (by default the bundled one) asked about each answer alone (docs/ai-judges.md)."""
    admin.call("PATCH", f"/api/v1/projects/{project_id}", json={"overlap": 1})
    name = "bundled-model judge" if not model_path else "local judge"
    judge = {"name": name, "kind": "local_pointwise", "model_path": model_path}
    admin.call("PUT", f"/api/v1/projects/{project_id}/judge", json=judge)


def judged_record(admin: Admin, project_id: int, seen: set[int]) -> RoundRecord:
    """The judge's rankings of tasks not in `seen` (earlier rounds'), as the team's record of a
    round: gold of every answer it ranked, and its order per task. Adds the tasks to `seen`."""
    response = admin.http.get(f"/api/v1/projects/{project_id}/exports/rankings")
    if response.status_code != 200:
        raise RuntimeError(f"rankings export: HTTP {response.status_code} {response.text[:200]}")
    record = RoundRecord()
    for line in response.text.splitlines():
        row = json.loads(line)
        if row["task_id"] in seen:
            continue
        prompt = parse(row["prompt_text"] or "")
        for completion in row["completions"]:
            cid, text = completion["completion_id"], completion["text"]
            record.gold[cid] = gold_reward(prompt, text)
            record.lc_gold[cid] = length_controlled(parts(prompt, text))
            record.words[cid] = len(words(text))
        record.orders[row["task_id"]] = {"judge": [cid for group in row["ranking"] for cid in group]}
    seen.update(record.orders)
    return record
