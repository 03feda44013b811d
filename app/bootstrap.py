"""First-run set-up shared by `ranklab bootstrap` and `ranklab simulate`: migrate the database,
create the admin (and a demo labeler), seed the demo project.

Its own module so that app/cli.py and app/simulation/run.py both import it without importing each
other."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

from app.db import make_engine
from app.models import Project, Role, User
from app.settings import ROOT, Settings

DEMO_LABELER_EMAIL = "labeler@ranklab.local"

Print = Callable[[str], None]


def _alembic_config(settings: Settings):
    from alembic.config import Config

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    # ConfigParser treats % as interpolation; URL-encoded passwords contain it.
    cfg.set_main_option("sqlalchemy.url", settings.sqlalchemy_url.replace("%", "%%"))
    return cfg


def _current_revision(settings: Settings) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(settings.sqlalchemy_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def migrate(settings: Settings, out: Print = print) -> None:
    """Alembic `upgrade head` on the configured database."""
    from alembic import command
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(settings)
    before = _current_revision(settings)
    head = ScriptDirectory.from_config(cfg).get_current_head()
    where = make_url(settings.sqlalchemy_url).render_as_string(hide_password=True)
    if before == head:
        out(f"Database {where}: up to date (revision {head}).")
        return
    command.upgrade(cfg, "head")
    out(f"Database {where}: migrated from {before or 'empty'} to {head}.")


def print_credentials(out: Print, title: str, email: str, password: str) -> None:
    out(title)
    out(f"    email:    {email}")
    out(f"    password: {password}")


def bootstrap(settings: Settings, *, demo: bool = True, out: Print = print) -> None:
    """Idempotent first-run set-up. Creates the admin (and a demo labeler) only when the database
    has no admin yet, and the demo project only when it has no project at all."""
    from app.admin import service as admin_service
    from app.auth import service as auth_service
    from app.demo import DEMONSTRATIONS_PROJECT_NAME, seed_demo

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Create the signing key now, before `serve` starts several workers that would race to.
    settings.resolved_secret_key()
    migrate(settings, out)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with sessionmaker(bind=engine)() as db, db.begin():
            created: list[tuple[str, str, str]] = []
            admins = db.execute(select(func.count()).select_from(User).where(User.role == Role.admin)).scalar_one()
            if admins == 0:
                admin, password = admin_service.create_account(
                    db, email=settings.admin_email, role=Role.admin, display_name="Admin"
                )
                created.append(("Admin account (shown only now; stored hashed):", admin.email, password))
                if demo and auth_service.get_user_by_email(db, email=DEMO_LABELER_EMAIL) is None:
                    labeler, password = admin_service.create_account(
                        db, email=DEMO_LABELER_EMAIL, role=Role.labeler, display_name="Demo labeler"
                    )
                    created.append(("Demo labeler account (shown only now):", labeler.email, password))
            else:
                out(f"Admin account exists ({admins} admin{'s' if admins > 1 else ''}); no account created.")
            projects = db.scalar(select(func.count()).select_from(Project))
            if demo and projects == 0:
                member = auth_service.get_user_by_email(db, email=DEMO_LABELER_EMAIL)
                project = seed_demo(db, labeler=member)
                out(
                    f"Seeded the demo projects “{project.name}” (id {project.id}), “{DEMONSTRATIONS_PROJECT_NAME}”"
                    " and one per feedback form (A/B, Likert, multi-aspect, good/bad)"
                    f"{f' with {member.email} as a member' if member else ''}."
                )
            elif projects:
                out(f"{projects} project{'s exist' if projects > 1 else ' exists'}; no demo project seeded.")
        # Printed after the commit: a password is only shown for an account that really exists.
        for title, email, password in created:
            out("")
            print_credentials(out, title, email, password)
        if created:
            out("")
            out(f"Log in at http://{settings.host}:{settings.port}/login after `ranklab serve`.")
    finally:
        engine.dispose()
