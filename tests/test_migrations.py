"""Every migration runs on a database populated at the revision before it, on both backends.

The data is made once at head through the app's own code (accounts, a login, an API token,
projects, tasks, rankings with pairs, a leased assignment, rounds with events, round prompts and
model versions), then copied into a database at each earlier revision, keeping the columns that
revision has. Each revision must then upgrade with every row intact, downgrade back with every row
intact, and reach head with a database the app can serve. A new migration is covered by adding
nothing; a new table fails `test_the_sample_data_fills_every_table` until the sample fills it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from graphlib import TopologicalSorter

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import Engine, MetaData, Table, bindparam, create_engine, func, select, text, update
from sqlalchemy.engine import make_url

from app.db import make_engine
from app.main import create_app
from app.models import AssignmentState
from app.settings import ROOT, Settings
from tests import services
from tests.evaluation.helpers import add_evaluation_sample
from tests.factories import PASSWORD, login, make_project, make_ranking, make_task, make_token, make_user
from tests.judges.helpers import populate_judge_rows
from tests.rounds.helpers import add_event, make_round, make_round_task, make_version
from tests.sft.helpers import populate_jobs

Rows = dict[str, list[dict]]


def _alembic(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def _revisions() -> list[tuple[str, str]]:
    """(revision, the revision before it), oldest first, for every migration but the first."""
    script = ScriptDirectory.from_config(_alembic("sqlite://"))
    walk = list(reversed(list(script.walk_revisions())))
    return [(r.revision, r.down_revision) for r in walk if r.down_revision is not None]


REVISIONS = _revisions()


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request, tmp_path) -> Iterator[str]:
    """A URL to a database with no tables: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrated.sqlite'}"
        return
    server = services.postgres_url()
    if server is None:
        services.missing("PostgreSQL")
    name = f"ranklab_migration_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _populate_at_head(url: str, tmp_path) -> None:
    """Realistic rows written by the app's own services and the test factories."""
    settings = Settings(
        data_dir=tmp_path / "head-data", database_url=url, secret_key="s", embedded_worker=False, _env_file=None
    )
    app = create_app(settings)
    from sqlalchemy.orm import sessionmaker

    db = sessionmaker(bind=app.state.engine, expire_on_commit=False, info={"settings": settings})()
    try:
        admin = make_user(db, role="admin", email="admin@example.com")
        project = make_project(db, name="migrated", k_min=4, k_max=6, overlap=2, flags=["rude"])
        labelers = [make_user(db, projects=[project]) for _ in range(2)]
        tasks = [make_task(db, project, k=4 + i % 2) for i in range(3)]
        first = [item.completion_id for item in tasks[0].items]
        make_ranking(db, tasks[0], labelers[0], [[first[0]], [first[1], first[2]], [first[3]]], comment="tie")
        make_ranking(db, tasks[0], labelers[1], [[c] for c in reversed(first)], none_acceptable=True)
        make_token(db, "upload", "export")
        training_round = make_round(db, project, number=0, status="labeling")
        base = make_version(db, project, kind="base", name="base")
        policy = make_version(db, project, kind="policy", parent=base, training_round=training_round)
        reward = make_version(db, project, kind="reward", training_round=training_round, metrics={"val_accuracy": 0.75})
        training_round.policy_in_id = policy.id
        db.commit()
        make_round_task(db, project, training_round)
        add_event(db, training_round, kind="metric", stage="reward", step=1, data={"loss": 0.69}, message="step")
        db.execute(
            text("INSERT INTO round_prompts (round_id, prompt_id, batch) VALUES (:r, :p, 0)"),
            {"r": training_round.id, "p": tasks[1].prompt_id},
        )
        db.commit()
        with TestClient(app) as client:
            login(client, labelers[0])
            page = client.get(f"/projects/{project.id}/label")  # leases a task: an active assignment
            assert page.status_code == 200, page.text
            failed = client.post("/login", data={"email": admin.email, "password": PASSWORD + "!"})
            assert failed.status_code == 401, failed.text  # a failed login leaves a login_attempts row
        add_evaluation_sample(db, project, base=base, policy=policy, reward=reward, judges=[labelers[1]])
        _populate_demonstrations(db, project, author=labelers[1])
        # Migration 0007: a finished SFT run, its version (job_id), a loss point, lineage to the demonstrations.
        populate_jobs(db, project, start=base, admin=admin)
        _populate_feedback_forms(db, labeler=labelers[0])
        populate_judge_rows(db, project, task=tasks[1])  # 0009: judges, judge_runs, judge_verdicts
        # 0011: a judge run of an AI-labelled round
        db.execute(
            text("UPDATE judge_runs SET round_id = :r WHERE id = (SELECT MIN(id) FROM judge_runs)"),
            {"r": training_round.id},
        )
        db.commit()
        _populate_handout_priority(db, project, tasks=tasks, reward=reward)  # 0010
    finally:
        db.close()
        app.state.engine.dispose()


def _populate_handout_priority(db, project, *, tasks, reward) -> None:
    """0010: an active handout order, priorities on two tasks (one left unscored), the refresh's
    record pointing at the reward model."""
    from app.models import utcnow

    project.handout_order = "uncertainty"
    project.priority_model_id = reward.id
    project.priority_method = "uncertainty"
    project.priorities_refreshed_at = utcnow()
    project.priority_stats = {"tasks": 2, "rankings": 2, "heads": 5}
    tasks[1].handout_priority = 0.25
    tasks[2].handout_priority = 0.75
    db.commit()


def _populate_demonstrations(db, project, *, author) -> None:
    """Issue 13's rows: a demonstration task with a model draft, one demonstration written from it
    and waiting for review, and the review task pointing at it (the two tables point at each other)."""
    from app.models import Completion, Demonstration, RankingTask, TaskCompletion

    project.demonstration_review = True
    task = make_task(db, project, k=1, texts=["A model draft to start from."])
    task.kind = "demonstration"
    db.flush()
    draft = task.items[0].completion_id
    db.add(Completion(prompt_id=task.prompt_id, text="an extra completion, never shown"))
    demonstration = Demonstration(
        project_id=project.id,
        prompt_id=task.prompt_id,
        task_id=task.id,
        user_id=author.id,
        response="The **ideal** answer.",
        response_html="<p>The <strong>ideal</strong> answer.</p>",
        draft_completion_id=draft,
        edit_distance=17,
        time_spent_ms=41000,
        status="pending_review",
        meta={"words": 3},
    )
    db.add(demonstration)
    db.flush()
    db.add(
        RankingTask(
            project_id=project.id,
            prompt_id=task.prompt_id,
            kind="demonstration_review",
            demonstration_id=demonstration.id,
        )
    )
    assert db.query(TaskCompletion).filter_by(task_id=task.id).count() == 1
    db.commit()


def _populate_feedback_forms(db, *, labeler) -> None:
    """Issue 15's rows (0008): a Likert project (its k range also fits the older 4–9 check), one
    answered task with a rating and a critique per completion, and a critique on a ranking."""
    from app.models import Feedback, FeedbackRating, Ranking

    settings = {"likert_points": 5, "likert_labels": ["awful", "poor", "fair", "good", "great"]}
    project = make_project(db, name="likert", k_min=4, k_max=4, feedback_form="likert", form_settings=settings)
    task = make_task(db, project, k=4)
    task.kind = "likert"
    ids = task.completion_ids
    feedback = Feedback(
        task_id=task.id,
        user_id=labeler.id,
        project_id=project.id,
        form="likert",
        settings=settings,
        display_order=ids,
        time_spent_ms=9000,
        comment="",
    )
    feedback.ratings = [
        FeedbackRating(completion_id=cid, aspect="", value=1 + i, critique=f"critique {i}" if i else None)
        for i, cid in enumerate(ids)
    ]
    db.add(feedback)
    ranking = db.scalar(select(Ranking).order_by(Ranking.id).limit(1))
    ranking.critiques = {str(ranking.groups[0][0]): "Too long, <b>but</b> right."}
    db.commit()


def _in_insert_order(meta: MetaData) -> list[Table]:
    """Every table after the tables its NOT NULL foreign keys point to. Reflection does not know
    which key of a cycle (ranking_tasks <-> demonstrations) is added later, and SQLAlchemy's own
    sort gives up on a cycle; a nullable key pointing forward is filled in `_load`'s second pass."""
    tables = {t.name: t for t in meta.tables.values()}
    needs = {
        name: {fk.column.table.name for fk in t.foreign_keys if not fk.parent.nullable and fk.column.table is not t}
        for name, t in sorted(tables.items())
    }
    return [tables[name] for name in TopologicalSorter(needs).static_order()]


def _dump(engine: Engine) -> Rows:
    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        return {
            table.name: [dict(row._mapping) for row in conn.execute(select(table))]
            for table in _in_insert_order(meta)
            if table.name != "alembic_version"
        }


def _load(engine: Engine, rows: Rows) -> None:
    """Inserts rows keeping only the tables and columns this database has; ids kept as they are."""
    meta = MetaData()
    meta.reflect(engine)
    order = _in_insert_order(meta)
    place = {table.name: i for i, table in enumerate(order)}
    with engine.begin() as conn:
        second_pass = []
        for i, table in enumerate(order):
            wanted = [{k: v for k, v in row.items() if k in table.c} for row in rows.get(table.name, [])]
            if not wanted:
                continue
            # References to this table or a later one wait until every table is filled.
            later = sorted({fk.parent.name for fk in table.foreign_keys if place[fk.column.table.name] >= i})
            conn.execute(table.insert(), [{**row, **dict.fromkeys(later)} for row in wanted])
            if later:
                statement = update(table).where(table.c.id == bindparam("k_id"))
                values = [{"k_id": row["id"], **{f"k_{c}": row[c] for c in later}} for row in wanted]
                second_pass.append((statement.values({c: bindparam(f"k_{c}") for c in later}), values))
        for statement, values in second_pass:
            conn.execute(statement, values)
        if engine.dialect.name == "postgresql":  # explicit ids leave the sequences behind
            for table in order:
                if "id" in table.c and rows.get(table.name):
                    conn.execute(
                        text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), max(id)) FROM {table.name}")
                    )


def _projected(rows: Rows, columns: dict[str, set[str]]) -> Rows:
    return {
        name: sorted(
            ({k: v for k, v in row.items() if k in columns[name]} for row in table_rows), key=lambda r: repr(r)
        )
        for name, table_rows in rows.items()
        if name in columns
    }


def _columns(engine: Engine) -> dict[str, set[str]]:
    meta = MetaData()
    meta.reflect(engine)
    return {t.name: {c.name for c in t.columns} for t in _in_insert_order(meta) if t.name != "alembic_version"}


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Rows:
    """The rows of a populated head database (SQLite): what each older database is filled from."""
    folder = tmp_path_factory.mktemp("migration-sample")
    url = f"sqlite:///{folder / 'head.sqlite'}"
    command.upgrade(_alembic(url), "head")
    _populate_at_head(url, folder)
    engine = make_engine(url)
    try:
        return _dump(engine)
    finally:
        engine.dispose()


def test_the_sample_data_fills_every_table(sample):
    empty = sorted(name for name, rows in sample.items() if not rows)
    assert not empty, f"add rows for {empty} to _populate_at_head so their migrations are tested on data"


@pytest.mark.parametrize(("revision", "previous"), REVISIONS, ids=[r for r, _ in REVISIONS])
def test_migration_keeps_every_row_both_ways(revision, previous, empty_database, sample, tmp_path):
    cfg = _alembic(empty_database)
    command.upgrade(cfg, previous)
    engine = make_engine(empty_database)
    try:
        _load(engine, sample)
        before_columns = _columns(engine)
        before = _projected(_dump(engine), before_columns)
        assert sum(map(len, before.values())) > 0

        command.upgrade(cfg, revision)
        kept = {name: cols & _columns(engine).get(name, set()) for name, cols in before_columns.items()}
        assert _projected(_dump(engine), kept) == _projected(before, kept), f"{revision} changed stored rows"

        command.downgrade(cfg, previous)
        assert _projected(_dump(engine), before_columns) == before, f"downgrading {revision} changed stored rows"

        command.upgrade(cfg, "head")
        _serves(engine, empty_database, tmp_path)
    finally:
        engine.dispose()


def _serves(engine: Engine, url: str, tmp_path) -> None:
    """At head, the migrated database serves: a labeler logs in and gets a task; counts add up."""
    from app.models import Assignment, RankingTask, User

    with engine.connect() as conn:
        labeler_email = conn.scalar(select(User.email).where(User.role == "labeler").order_by(User.id))
        open_tasks = conn.scalar(select(func.count()).select_from(RankingTask).where(RankingTask.status == "open"))
        leases = conn.scalar(
            select(func.count()).select_from(Assignment).where(Assignment.state == AssignmentState.leased)
        )
    assert open_tasks and open_tasks > 0 and leases == 1
    settings = Settings(
        data_dir=tmp_path / "served", database_url=url, secret_key="s", embedded_worker=False, _env_file=None
    )
    app = create_app(settings)
    try:
        with TestClient(app) as client:
            answer = client.post("/login", data={"email": labeler_email, "password": PASSWORD}, follow_redirects=False)
            assert answer.status_code == 303, answer.text
            assert client.get("/").status_code == 200
    finally:
        app.state.engine.dispose()
