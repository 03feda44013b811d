"""The "Launch round" form: defaults from RoundConfigIn, inline messages (pydantic's and the
service's), nothing stored on refusal, launch → the round page, a queue that is down shown inline."""

import re

from sqlalchemy import func, select

from app.models import Prompt, RoundEvent, TrainingRound
from app.rounds import launch_form
from app.rounds.schemas import RoundConfigIn
from tests.admin.helpers import admin_client, fresh
from tests.factories import make_project


def add_prompts(db, project, n=3):
    db.add_all(Prompt(project_id=project.id, external_id=f"q{i}", text=f"Question {i}?") for i in range(n))
    db.commit()


def defaults() -> dict[str, str]:
    return dict(launch_form.blank_form().values)


def input_value(html: str, name: str) -> str:
    match = re.search(rf'<input type="number" name="{re.escape(name)}"[^>]* value="([^"]*)"', html)
    assert match, name
    return match.group(1)


def error_for(html: str, name: str) -> str:
    dom_id = "f-" + name.replace(".", "-")
    match = re.search(rf'id="{dom_id}-error" role="alert">([^<]+)<', html)
    assert match, f"no message beside {name}"
    return match.group(1)


def rounds_count(db) -> int:
    fresh(db)
    return db.scalar(select(func.count()).select_from(TrainingRound))


def test_form_shows_the_schema_defaults(client, db):
    admin_client(client, db)
    project = make_project(db, k_min=5, k_max=7)
    html = client.get(f"/admin/projects/{project.id}/rounds/new").text
    config = RoundConfigIn()
    assert input_value(html, "prompts.count") == str(config.prompts.count)
    assert input_value(html, "ppo.kl_coef") == str(config.ppo.kl_coef)
    assert input_value(html, "reward.learning_rate") == str(config.reward.learning_rate)
    assert input_value(html, "k") == "" and "project&#39;s K min (5)" in html
    assert re.search(r'<option value="lora" selected>LoRA', html) and '<option value="full" >Full fine-tune' in html
    assert 'name="labeling.auto_start" id="f-labeling-auto_start" >' in html  # unchecked by default
    # every leaf field of the schema has an input
    for section in launch_form.sections():
        for f in section.fields:
            assert f'name="{f.name}"' in html, f.name


def test_bad_values_get_messages_beside_their_fields_and_nothing_is_stored(client, db):
    _admin, csrf = admin_client(client, db)
    project = make_project(db)
    add_prompts(db, project)
    form = defaults() | {
        "csrf_token": csrf,
        "ppo.batch_size": "4",
        "ppo.minibatch_size": "8",
        "reward.learning_rate": "fast",
        "generation.top_p": "1.5",
        "prompts.count": "",
    }
    response = client.post(f"/admin/projects/{project.id}/rounds", data=form)
    assert response.status_code == 422
    html = response.text
    assert "Not launched: fix the" in html
    assert error_for(html, "prompts.count") == "enter a number"
    assert (
        error_for(html, "reward.learning_rate") == "Input should be a valid number, unable to parse string as a number"
    )
    assert error_for(html, "generation.top_p") == "Input should be less than or equal to 1"
    # what was typed is kept
    assert input_value(html, "reward.learning_rate") == "fast" and input_value(html, "ppo.minibatch_size") == "8"
    # the PPO model check (minibatch ≤ batch) runs once the numbers parse; its message goes beside minibatch_size
    form |= {"reward.learning_rate": "0.0002", "generation.top_p": "0.9", "prompts.count": "2"}
    html = client.post(f"/admin/projects/{project.id}/rounds", data=form).text
    assert error_for(html, "ppo.minibatch_size") == "minibatch_size (8) must be ≤ batch_size (4)"
    assert rounds_count(db) == 0


def test_service_refusals_are_shown_inline(client, db):
    _admin, csrf = admin_client(client, db)
    project = make_project(db, k_min=4, k_max=5)
    response = client.post(f"/admin/projects/{project.id}/rounds", data=defaults() | {"csrf_token": csrf})
    assert response.status_code == 422
    assert (
        'class="error banner" role="alert">Not launched: the project has no unused prompts; upload prompts first'
        in response.text
    )
    add_prompts(db, project)
    response = client.post(f"/admin/projects/{project.id}/rounds", data=defaults() | {"csrf_token": csrf, "k": "7"})
    assert response.status_code == 422
    assert error_for(response.text, "k") == "must be within the project&#39;s range 4–5, got 7"
    assert rounds_count(db) == 0


def test_launch_redirects_to_the_round_page(client, db):
    _admin, csrf = admin_client(client, db)
    project = make_project(db)
    add_prompts(db, project, 5)
    form = defaults() | {
        "csrf_token": csrf,
        "prompts.count": "3",
        "k": "5",
        "reward.mode": "full",
        "labeling.auto_start": "on",
        "generation.seed": "",
    }
    response = client.post(f"/admin/projects/{project.id}/rounds", data=form, follow_redirects=False)
    assert response.status_code == 303
    fresh(db)
    row = db.scalar(select(TrainingRound).where(TrainingRound.project_id == project.id))
    assert response.headers["location"] == f"/admin/rounds/{row.id}"
    assert (row.number, row.status, row.config["k"]) == (0, "pending", 5)
    assert row.config["reward"]["mode"] == "full" and row.config["labeling"]["auto_start"] is True
    assert row.config["generation"]["seed"] is None and row.config["prompts"]["count"] == 3
    page = client.get(response.headers["location"]).text
    assert "Round 0" in page and 'data-status="pending"' in page and "launched by" in page
    # a second launch while round 0 runs is refused with the service's reason
    response = client.post(f"/admin/projects/{project.id}/rounds", data=form)
    assert response.status_code == 409 and "round 0 is still pending" in response.text


def test_an_unreachable_queue_is_shown_and_nothing_is_stored(client, db, settings):
    _admin, csrf = admin_client(client, db)
    project = make_project(db)
    add_prompts(db, project)
    settings.broker_url = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = client.post(f"/admin/projects/{project.id}/rounds", data=defaults() | {"csrf_token": csrf})
    assert response.status_code == 503
    assert re.search(
        r'class="error banner" role="alert">Not launched: task queue unreachable — is Redis running\?', response.text
    )
    assert rounds_count(db) == 0 and db.scalar(select(func.count()).select_from(RoundEvent)) == 0


def test_the_evaluation_opponents_are_typed_comma_separated():
    """A list setting (evaluation.human_against) is one text input of comma-separated choices."""
    assert defaults()["evaluation.human_against"] == "previous"
    form, config = launch_form.parse(
        defaults() | {"evaluation.human_against": "previous, base", "evaluation.human": "on"}
    )
    assert config is not None and config.evaluation.human_against == ["previous", "base"] and config.evaluation.human
    form, config = launch_form.parse(defaults() | {"evaluation.human_against": "previous, everyone"})
    assert config is None and "evaluation.human_against" in form.errors
    assert form.values["evaluation.human_against"] == "previous, everyone"  # kept as typed


def test_the_policy_optimizer_and_its_section_come_from_the_form(client, db):
    _admin, csrf = admin_client(client, db)
    project = make_project(db, k_min=4, k_max=4)
    add_prompts(db, project, 4)
    html = client.get(f"/admin/projects/{project.id}/rounds/new").text
    assert re.search(r'<option value="ppo" selected>PPO', html) and '<option value="dpo" >DPO' in html
    assert "Policy (RLOO / GRPO)" in html and "Samples per prompt (group)" in html
    # RLOO's minibatch must fit prompts_per_step × k, k being the round's K when left empty
    form = defaults() | {
        "csrf_token": csrf,
        "optimizer": "rloo",
        "rloo.prompts_per_step": "2",
        "rloo.minibatch_size": "9",
    }
    response = client.post(f"/admin/projects/{project.id}/rounds", data=form)
    assert response.status_code == 422
    assert error_for(response.text, "rloo.minibatch_size") == "must be ≤ prompts_per_step × k (2 × 4), got 9"
    assert rounds_count(db) == 0
    form = defaults() | {"csrf_token": csrf, "optimizer": "dpo", "dpo.beta": "0.3", "dpo.rankings_from": "this_round"}
    response = client.post(f"/admin/projects/{project.id}/rounds", data=form, follow_redirects=False)
    assert response.status_code == 303
    fresh(db)
    row = db.scalar(select(TrainingRound).where(TrainingRound.project_id == project.id))
    assert row.config["optimizer"] == "dpo"
    assert (row.config["dpo"]["beta"], row.config["dpo"]["rankings_from"]) == (0.3, "this_round")


def test_aspect_weights_are_typed_as_name_colon_number(client, db):
    _admin, csrf = admin_client(client, db)
    project = make_project(db, k_min=4, k_max=4)
    add_prompts(db, project, 4)
    form, config = launch_form.parse(defaults() | {"reward.weights": "helpfulness: 0.7, harmlessness:0.3"})
    assert config is not None and config.reward.weights == {"helpfulness": 0.7, "harmlessness": 0.3}
    form, config = launch_form.parse(defaults() | {"reward.weights": "helpfulness 0.7"})
    assert config is None and "aspect: number" in form.errors["reward.weights"]
    # a ranking project has no aspects: the service's refusal is shown beside the field
    response = client.post(
        f"/admin/projects/{project.id}/rounds",
        data=defaults() | {"csrf_token": csrf, "reward.weights": "helpfulness: 1"},
    )
    assert response.status_code == 422
    assert "only a multi-aspect project has aspects" in error_for(response.text, "reward.weights")
    assert rounds_count(db) == 0
