"""The feedback forms' exports through the real API, on both backends: pairs derived from
pairwise, Likert, good/bad and multi-aspect judgments, KTO's unpaired rows, raw judgments, and
each loading unchanged with `datasets` (JSONL and Parquet)."""

import io
import json

import pyarrow.parquet as pq
import pytest

from app.models import Prompt, Role
from tests.admin.forms_data import form_project, form_task, pairwise_judgment, rating_judgment
from tests.factories import make_user


def jsonl_rows(response):
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


def _labelers(db, project, n=2):
    return [make_user(db, role=Role.labeler, projects=[project]) for _ in range(n)]


@pytest.fixture
def likert(db):
    """Two labelers on a text task, one on a chat task that rates everything equal."""
    project = form_project(db, "likert", name="likert")
    a, b = _labelers(db, project)
    task = form_task(
        db, project, texts=["paris is the capital", "lima maybe", "rome"], prompt_text="capital of france ?"
    )
    p, q, r = task.completion_ids
    rating_judgment(db, task, a, {p: 7, q: 4, r: 4}, critiques={q: "vague"}, comment="easy")
    rating_judgment(db, task, b, {p: 5, q: 6, r: 1})
    chat = form_task(db, project, texts=["x", "y", "z"])
    prompt = db.get(Prompt, chat.prompt_id)
    prompt.text, prompt.messages = None, [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}]
    db.commit()
    rating_judgment(db, chat, a, dict.fromkeys(chat.completion_ids, 2))
    return {"project": project, "task": task, "users": (a, b)}


def test_likert_pairs_equal_ratings_give_none(client, likert, export_auth):
    project, task = likert["project"], likert["task"]
    p, q, r = task.completion_ids
    rows = jsonl_rows(client.get(f"/api/v1/projects/{project.id}/exports/pairs", headers=export_auth))
    # a: 7 > 4 = 4 -> (p, q), (p, r); b: 5, 6, 1 -> (q, p), (p, r), (q, r); the chat task: all 2 -> none.
    assert [(row["chosen_id"], row["rejected_id"]) for row in rows] == [(p, q), (p, r), (q, p), (p, r), (q, r)]
    first = rows[0]
    assert (first["prompt"], first["chosen"], first["rejected"]) == (
        "capital of france ?",
        "paris is the capital",
        "lima maybe",
    )
    # Scores in [0, 1]: (7 - 1) / 6 - (4 - 1) / 6 = 0.5.
    assert first["score_gap"] == pytest.approx(0.5) and first["scored_by"] == "rating" and first["form"] == "likert"
    assert first["ranking_id"] is None and first["rank_gap"] is None and first["feedback_id"] is not None
    assert rows[2]["labeler_id"] != first["labeler_id"]
    assert likert["users"][0].email not in json.dumps(rows)


def test_multi_aspect_pairs_by_aspect_weights_or_overall(client, db, export_auth):
    project = form_project(db, "multi_aspect")
    (a,) = _labelers(db, project, 1)
    task = form_task(db, project, texts=["one", "two"])
    i, j = task.completion_ids
    # i: more helpful, less honest, worse style; the overall ranking puts j first.
    rating_judgment(
        db,
        task,
        a,
        {
            i: {"": 1, "helpfulness": 5, "honesty": 2, "style": 1},
            j: {"": 0, "helpfulness": 2, "honesty": 4, "style": 0},
        },
    )
    url = f"/api/v1/projects/{project.id}/exports/pairs"

    def pairs(**params):
        return [
            (r["chosen_id"], r["rejected_id"], r["scored_by"])
            for r in jsonl_rows(client.get(url, headers=export_auth, params=params))
        ]

    assert pairs() == [(j, i, "overall")]  # the default when the project ranks overall
    assert pairs(aspect="helpfulness") == [(i, j, "helpfulness")]
    assert pairs(aspect="style") == [(j, i, "style")]
    # helpfulness scores 1 and 0.25, honesty 0.25 and 0.75 (5 points). 1:1 -> 0.625 vs 0.5: i.
    # 1:3 -> 0.4375 vs 0.625: j.
    assert pairs(weights="helpfulness:1,honesty:1") == [(i, j, "helpfulness:1,honesty:1")]
    assert pairs(weights="helpfulness:1,honesty:3") == [(j, i, "helpfulness:1,honesty:3")]
    for params, param in [
        ({"aspect": "speed"}, "aspect"),
        ({"weights": "helpfulness"}, "weights"),
        ({"weights": "helpfulness:-1"}, "weights"),
        ({"aspect": "style", "weights": "style:1"}, "weights"),
    ]:
        response = client.get(url, headers=export_auth, params=params)
        assert response.status_code == 422 and response.json()["detail"].startswith(f"{param}: "), response.text


def test_pairwise_form_pairs_and_judgments_are_in_completion_terms(client, db, export_auth):
    project = form_project(db, "pairwise")
    a, b = _labelers(db, project)
    task = form_task(db, project, texts=["left", "right"], prompt_text="which ?")
    x, y = task.completion_ids
    # Both prefer y; a saw it as B, b as A. A tie and a both-bad give no pair.
    pairwise_judgment(db, task, a, "second", sides=(x, y), critiques={str(x): "too long"})
    pairwise_judgment(db, task, b, "second", sides=(y, x))
    other = form_task(db, project, texts=["u", "v"])
    pairwise_judgment(db, other, a, "tie")
    pairwise_judgment(db, other, b, "both_bad")
    base = f"/api/v1/projects/{project.id}/exports"
    pairs = jsonl_rows(client.get(f"{base}/pairs", headers=export_auth))
    assert [(r["chosen"], r["rejected"], r["form"]) for r in pairs] == [("right", "left", "pairwise")] * 2
    judgments = jsonl_rows(client.get(f"{base}/judgments", headers=export_auth))
    assert [(j["verdict"], j["display_order"]) for j in judgments] == [
        ("second", [x, y]),
        ("second", [y, x]),
        ("tie", other.completion_ids),
        ("both_bad", other.completion_ids),
    ]
    first = judgments[0]
    assert first["critiques"] == [{"completion_id": x, "critique": "too long"}] and first["form"] == "pairwise"
    assert first["ranking"] == [[y], [x]] and first["ratings"] is None and first["feedback_id"] is None
    assert judgments[3]["none_acceptable"] is True
    rankings = jsonl_rows(client.get(f"{base}/rankings", headers=export_auth))
    assert rankings[0]["critiques"] == [{"completion_id": x, "critique": "too long"}]


@pytest.fixture
def good_bad(db):
    project = form_project(db, "good_bad", name="kto")
    a, b = _labelers(db, project)
    words = ["paris", "lima", "rome", "capital", "city", "france"]
    for n in range(2):
        task = form_task(db, project, texts=words[3 * n : 3 * n + 3], prompt_text=f"capital of {words[n]} ?")
        c1, c2, c3 = task.completion_ids
        rating_judgment(db, task, a, {c1: "good", c2: "bad", c3: "good"}, critiques={c2: "wrong city"})
        rating_judgment(db, task, b, {c1: "good", c2: "bad", c3: "bad"})
    return project


def test_unpaired_rows_for_kto_and_good_over_bad_pairs(client, good_bad, export_auth):
    base = f"/api/v1/projects/{good_bad.id}/exports"
    rows = jsonl_rows(client.get(f"{base}/unpaired", headers=export_auth))
    assert len(rows) == 12  # 2 tasks x 2 labelers x 3 completions
    assert [r["label"] for r in rows[:6]] == [True, False, True, True, False, False]
    assert rows[0]["prompt"] == "capital of paris ?" and rows[0]["completion"] == "paris"
    assert rows[1]["critique"] == "wrong city" and rows[0]["critique"] is None
    chat = jsonl_rows(client.get(f"{base}/unpaired", headers=export_auth, params={"style": "conversational"}))
    assert chat[0]["prompt"] == [{"role": "user", "content": "capital of paris ?"}]
    assert chat[0]["completion"] == [{"role": "assistant", "content": "paris"}]
    # good over bad within each judgment: a 2 pairs, b 2 pairs, per task.
    pairs = jsonl_rows(client.get(f"{base}/pairs", headers=export_auth))
    assert len(pairs) == 8 and all(r["score_gap"] == 1.0 for r in pairs)
    assert ("paris", "lima") in {(r["chosen"], r["rejected"]) for r in pairs}


def test_raw_judgments_keep_every_field(client, likert, export_auth):
    project, task = likert["project"], likert["task"]
    p, q, r = task.completion_ids
    rows = jsonl_rows(client.get(f"/api/v1/projects/{project.id}/exports/judgments", headers=export_auth))
    assert len(rows) == 3  # one per submitted judgment
    first = rows[0]
    assert first["form"] == "likert" and first["task_id"] == task.id and first["comment"] == "easy"
    assert first["ratings"] == [
        {"completion_id": p, "aspect": "", "value": 7, "critique": None},
        {"completion_id": q, "aspect": "", "value": 4, "critique": "vague"},
        {"completion_id": r, "aspect": "", "value": 4, "critique": None},
    ]
    assert first["critiques"] == [{"completion_id": q, "critique": "vague"}]
    assert first["settings"] == {"likert_points": 7, "likert_labels": [], "aspects": None, "overall_ranking": None}
    assert first["time_spent_ms"] == 1500 and first["late"] is False and first["display_order"] == [p, q, r]
    assert [c["text"] for c in first["completions"]] == ["paris is the capital", "lima maybe", "rome"]
    assert rows[2]["prompt_messages"][0] == {"role": "system", "content": "Be terse."}
    assert first["verdict"] is None and first["ranking_id"] is None


def test_exports_refuse_unknown_projects_and_tokens(client, likert, export_auth, upload_auth):
    base = f"/api/v1/projects/{likert['project'].id}/exports"
    assert client.get(f"{base}/judgments").status_code == 401
    assert client.get(f"{base}/unpaired", headers=upload_auth).status_code == 403
    assert client.get("/api/v1/projects/999/exports/judgments", headers=export_auth).status_code == 404


@pytest.mark.parametrize(
    ("fixture", "kind", "params"),
    [
        ("likert", "pairs", {}),
        ("likert", "pairs", {"style": "conversational"}),
        ("likert", "judgments", {}),
        ("good_bad", "unpaired", {}),
        ("good_bad", "unpaired", {"style": "conversational"}),
        ("good_bad", "judgments", {}),
    ],
)
def test_forms_exports_load_unchanged_with_datasets(
    request, client, export_auth, tmp_path, monkeypatch, fixture, kind, params
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from datasets import load_dataset

    data = request.getfixturevalue(fixture)
    project = data["project"] if isinstance(data, dict) else data
    url = f"/api/v1/projects/{project.id}/exports/{kind}"
    response = client.get(url, headers=export_auth, params=params)
    rows = jsonl_rows(response)
    assert rows
    (tmp_path / "export.jsonl").write_bytes(response.content)
    cache = str(tmp_path / "cache")
    assert (
        load_dataset("json", data_files=str(tmp_path / "export.jsonl"), split="train", cache_dir=cache).to_list()
        == rows
    )

    parquet = client.get(url, headers=export_auth, params={**params, "format": "parquet"})
    assert parquet.status_code == 200 and parquet.headers["content-type"] == "application/vnd.apache.parquet"
    assert pq.read_table(io.BytesIO(parquet.content)).to_pylist() == rows
    (tmp_path / "export.parquet").write_bytes(parquet.content)
    assert (
        load_dataset("parquet", data_files=str(tmp_path / "export.parquet"), split="train", cache_dir=cache).to_list()
        == rows
    )


def test_answers_submitted_through_the_labeling_service(client, db, export_auth):
    """The rows the real submit path stores (app/labeling/submission.py) read back the same way."""
    from app.admin import form_stats
    from app.labeling import submission
    from app.labeling.schemas import SubmissionIn
    from tests.labeling.helpers import next_view

    project = form_project(db, "multi_aspect", overlap=2)
    task = form_task(db, project, texts=["one", "two"])
    i, j = task.completion_ids
    for user, honest_first in zip(_labelers(db, project), (True, False), strict=True):
        view = next_view(db, user, project)
        assert view is not None and view.task_id == task.id
        order = [[i], [j]] if honest_first else [[j], [i]]
        answer = SubmissionIn(
            ratings=[
                {"completion_id": i, "aspect": "helpfulness", "value": 5},
                {"completion_id": j, "aspect": "helpfulness", "value": 2},
                {"completion_id": i, "aspect": "honesty", "value": 4},
                {"completion_id": j, "aspect": "honesty", "value": 4},
            ],
            aspect_rankings={"style": order},
            ranking=[[j], [i]],
            critiques={str(j): "terse"},
        )
        submission.submit_answer(
            db, user=user, project=project, assignment_id=view.assignment_id, data=answer, sweep_every=3600
        )
        db.commit()
    base = f"/api/v1/projects/{project.id}/exports"
    pairs = jsonl_rows(client.get(f"{base}/pairs", headers=export_auth, params={"aspect": "helpfulness"}))
    assert [(r["chosen_id"], r["rejected_id"], r["score_gap"]) for r in pairs] == [(i, j, 0.75)] * 2
    assert jsonl_rows(client.get(f"{base}/pairs", headers=export_auth, params={"aspect": "honesty"})) == []
    overall = jsonl_rows(client.get(f"{base}/pairs", headers=export_auth))
    assert [(r["chosen_id"], r["scored_by"]) for r in overall] == [(j, "overall")] * 2
    judgments = jsonl_rows(client.get(f"{base}/judgments", headers=export_auth))
    assert len(judgments) == 2 and judgments[0]["critiques"] == [{"completion_id": j, "critique": "terse"}]
    assert {(r["aspect"], r["completion_id"], r["value"]) for r in judgments[1]["ratings"]} >= {
        ("style", i, 1),
        ("", j, 0),
    }

    report = form_stats.project_form_agreement(db, project_id=project.id, form_settings=project.form_settings)
    by_key = {m.key: m for m in report.measures}
    assert by_key["aspect:helpfulness"].agreement_pct == 100.0 and by_key["overall_ranking"].agreement_pct == 100.0
    assert by_key["aspect:style"].agreement_pct == 0.0 and by_key["aspect:style"].alpha_ordinal < 0
