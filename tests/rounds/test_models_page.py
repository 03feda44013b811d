"""Model versions: lineage, the rankings behind a reward model, side-by-side completions (escaped),
and artifact downloads that never leave settings.artifacts_dir."""

import io
import re
import zipfile

from app.models import Completion, Prompt
from tests.admin.helpers import admin_client
from tests.factories import make_project, make_ranking, make_task, make_user
from tests.rounds.helpers import make_round, make_round_task, make_version


def lineage_items(html: str) -> list[str]:
    block = re.search(r'<ol class="lineage">(.*?)</ol>', html, re.S).group(1)
    return [
        re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", item)).strip() for item in re.findall(r"<li.*?</li>", block, re.S)
    ]


def test_lineage_follows_parents_and_names_rounds(client, db):
    admin_client(client, db)
    project = make_project(db)
    base = make_version(db, project, kind="base", name="tiny base")
    round0 = make_round(db, project, number=0, status="done", policy_in_id=base.id)
    policy0 = make_version(db, project, name="policy r0", parent=base, training_round=round0)
    round1 = make_round(db, project, number=1, status="done", policy_in_id=policy0.id)
    policy1 = make_version(
        db,
        project,
        name="policy r1",
        parent=policy0,
        training_round=round1,
        metrics={"score": [0.1, 0.3, 0.2], "kl": [0.0, 0.01, 0.02], "total_seconds": 12.5},
    )
    html = client.get(f"/admin/models/{policy1.id}").text
    assert lineage_items(html) == [
        f"policy #{policy1.id} policy r1 · produced by round 1",
        f"policy #{policy0.id} policy r0 · produced by round 0",
        f"base #{base.id} tiny base",
        "backbone: tiny/base",
    ]
    assert f'href="/admin/models/{policy0.id}"' in html and f'href="/admin/rounds/{round1.id}"' in html
    assert re.search(r"total_seconds</th><td[^>]*>12.5<", html)
    assert "<figcaption>kl" in html and "<figcaption>score" in html  # per-step lists are charted
    listing = client.get(f"/admin/projects/{project.id}/models").text
    assert re.findall(r'<tr>\s*<td><a href="/admin/models/(\d+)">', listing) == [
        str(v.id) for v in (policy1, policy0, base)
    ]


def test_reward_model_counts_the_rankings_up_to_its_round(client, db):
    admin_client(client, db)
    project = make_project(db)
    labelers = [make_user(db, projects=[project]) for _ in range(2)]
    base = make_version(db, project, kind="base")
    rounds = [make_round(db, project, number=n, status="done", policy_in_id=base.id) for n in range(3)]
    uploaded = make_task(db, project)
    in_round0, in_round1, in_round2 = (make_round_task(db, project, r) for r in rounds)
    for task, users in (
        (uploaded, labelers[:1]),
        (in_round0, labelers),
        (in_round1, labelers[:1]),
        (in_round2, labelers),
    ):
        for user in users:
            make_ranking(db, task, user, [[c] for c in task.completion_ids])
    reward = make_version(
        db,
        project,
        kind="reward",
        training_round=rounds[1],
        metrics={"train_rankings": 3, "val_rankings": 1, "val_accuracy": 0.75},
    )
    html = client.get(f"/admin/models/{reward.id}").text
    assert "data-rankings-behind>4<" in html  # uploaded 1 + round 0's 2 + round 1's 1; round 2 came later
    assert re.search(r"<dt>Tasks</dt><dd>3</dd>", html) and re.search(r"<dt>Labelers</dt><dd>2</dd>", html)
    assert re.search(r"<dt>Trained on</dt><dd>3</dd>", html) and re.search(r"<dt>Validated on</dt><dd>1</dd>", html)


def test_side_by_side_shows_shared_prompts_escaped(client, db):
    admin_client(client, db)
    project = make_project(db)
    a = make_version(db, project, name="left")
    b = make_version(db, project, name="right")
    shared = Prompt(project_id=project.id, external_id="shared", text="Explain **tides**")
    only_a = Prompt(project_id=project.id, external_id="only-a", text="Only the left model saw this")
    db.add_all([shared, only_a])
    db.flush()
    db.add_all(
        [
            Completion(prompt_id=shared.id, text="**Moon** pulls <script>alert(1)</script>", model_version_id=a.id),
            Completion(prompt_id=shared.id, text="[x](javascript:alert(2)) gravity", model_version_id=b.id),
            Completion(prompt_id=only_a.id, text="lonely", model_version_id=a.id),
        ]
    )
    db.commit()
    html = client.get(f"/admin/projects/{project.id}/models?a={a.id}&b={b.id}").text
    assert "1 prompt both versions answered" in html
    assert "Explain <strong>tides</strong>" in html and "Only the left model" not in html and "lonely" not in html
    assert "<strong>Moon</strong> pulls &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert" not in html and 'href="javascript' not in html  # shown as text, never a link
    cols = re.findall(r'<div class="compare-col">\s*<h3>([^<]+)</h3>', html)
    assert cols == [f"#{a.id} policy · left", f"#{b.id} policy · right"]


def test_compare_refuses_versions_of_another_project(client, db):
    admin_client(client, db)
    project, other = make_project(db), make_project(db)
    mine = make_version(db, project)
    theirs = make_version(db, other)
    response = client.get(f"/admin/projects/{project.id}/models?a={mine.id}&b={theirs.id}")
    assert response.status_code == 404 and f"No model version {theirs.id} in this project" in response.text


def test_download_streams_the_artifact_folder(client, db, settings):
    admin_client(client, db)
    project = make_project(db)
    folder = settings.artifacts_dir / "project-1" / "round-0" / "policy"
    (folder / "adapter").mkdir(parents=True)
    (folder / "card.json").write_text('{"kind": "policy"}')
    weights = bytes(range(256)) * 8192  # 2 MiB, more than one read chunk
    (folder / "adapter" / "adapter_model.safetensors").write_bytes(weights)
    secret = settings.data_dir / "secret_key"
    secret.write_text("do not ship")
    (folder / "escape").symlink_to(secret)  # a link out of the artifacts folder is left out
    version = make_version(db, project, artifact_path=str(folder))
    relative = make_version(db, project, kind="reward", artifact_path="project-1/round-0/policy/card.json")
    response = client.get(f"/admin/models/{version.id}/download")
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    assert f'filename="model-{version.id}-policy.zip"' in response.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert sorted(archive.namelist()) == ["adapter/adapter_model.safetensors", "card.json"]
    assert archive.read("adapter/adapter_model.safetensors") == weights and archive.testzip() is None
    single = zipfile.ZipFile(io.BytesIO(client.get(f"/admin/models/{relative.id}/download").content))
    assert single.namelist() == ["card.json"]
    page = client.get(f"/admin/models/{version.id}").text
    assert f'href="/admin/models/{version.id}/download"' in page


def test_download_refuses_paths_outside_the_artifacts_folder(client, db, settings):
    admin_client(client, db)
    project = make_project(db)
    settings.artifacts_dir.mkdir(parents=True)
    (settings.data_dir / "secret_key").write_text("do not ship")
    for path in ("/etc", str(settings.data_dir), "../secret_key", "ok/../../secret_key"):
        version = make_version(db, project, artifact_path=path)
        response = client.get(f"/admin/models/{version.id}/download")
        assert response.status_code == 403, path
        assert "outside the artifacts folder" in response.json()["detail"]
        assert "do not ship" not in response.text
        assert "Download unavailable: the artifact path is outside" in client.get(f"/admin/models/{version.id}").text
    missing = make_version(db, project, artifact_path="round-9/gone")
    response = client.get(f"/admin/models/{missing.id}/download")
    assert response.status_code == 404 and "nothing is stored at this path" in response.json()["detail"]
    no_path = make_version(db, project, kind="base")
    assert client.get(f"/admin/models/{no_path.id}/download").status_code == 404


def test_round_page_links_only_downloadable_artifacts(client, db, settings):
    admin_client(client, db)
    project = make_project(db)
    folder = settings.artifacts_dir / "rm"
    folder.mkdir(parents=True)
    (folder / "card.json").write_text("{}")
    training_round = make_round(db, project, status="training_policy")
    reward = make_version(db, project, kind="reward", training_round=training_round, artifact_path=str(folder))
    policy = make_version(db, project, kind="policy", training_round=training_round, artifact_path="/etc")
    html = client.get(f"/admin/rounds/{training_round.id}", headers={"HX-Request": "true"}).text
    assert f'href="/admin/models/{reward.id}/download"' in html
    assert f'href="/admin/models/{policy.id}/download"' not in html
    assert "Download unavailable: the artifact path is outside the artifacts folder" in html
