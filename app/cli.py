"""`ranklab` command line: bootstrap (migrate + accounts + demo), serve, create-user/-token, export-all/import-all.

Secrets (generated passwords, API tokens) are printed exactly once, when they are created;
only their hashes are stored, so a re-run has nothing secret to print."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import NoReturn

from sqlalchemy.orm import Session, sessionmaker

from app.bootstrap import Print, bootstrap, migrate, print_credentials
from app.db import make_engine
from app.keepalive import LOAD_DIR_ENV
from app.models import ProjectMember, Role, TokenScope
from app.settings import ROOT, Settings, get_settings


def _embedded_worker(settings: Settings) -> subprocess.Popen | None:
    """A solo-pool Celery worker beside the web process, for the no-server default set-up."""
    from worker.celery_app import solo_worker_command  # celery only; no torch in this process

    command = solo_worker_command()
    try:
        return subprocess.Popen(command, cwd=ROOT)
    except OSError as exc:
        print(
            f"warning: could not start the embedded worker ({exc}); training rounds will wait for a worker",
            file=sys.stderr,
        )
        return None


def _exit_on_sigterm(_signum, _frame) -> NoReturn:
    raise SystemExit(0)


def serve(settings: Settings) -> None:
    import uvicorn

    worker = _embedded_worker(settings) if settings.embedded_worker else None
    # uvicorn re-raises SIGTERM after its graceful shutdown; with the default handler that would
    # kill this process before `finally` and orphan the worker. Turn it into SystemExit instead.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    load_dir = None
    if settings.web_workers > 1:  # the workers share out their connections (app/keepalive.py)
        load_dir = tempfile.mkdtemp(prefix="ranklab-workers-")
        os.environ[LOAD_DIR_ENV] = load_dir
    try:
        # A factory import string, so each of several worker processes builds its own app and engine.
        uvicorn.run(
            "app.main:create_served_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.web_workers,
            proxy_headers=True,
            access_log=settings.access_log,
        )
    finally:
        if load_dir is not None:
            shutil.rmtree(load_dir, ignore_errors=True)
        if worker is not None:
            worker.terminate()  # SIGTERM: Celery's warm shutdown finishes or requeues the current task
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()


def _session(settings: Settings) -> tuple[Session, Callable[[], None]]:
    engine = make_engine(settings.sqlalchemy_url)
    return sessionmaker(bind=engine)(), engine.dispose


def create_user(settings: Settings, *, email: str, role: str, project_names: Sequence[str], out: Print = print) -> int:
    from app.admin import service as admin_service
    from app.projects import service as projects

    db, dispose = _session(settings)
    try:
        with db.begin():
            user, password = admin_service.create_account(db, email=email, role=role)
            email = user.email  # normalised; read before the session closes
            for name in project_names:
                project = projects.get_project_by_name(db, name=name)
                if project is None:
                    raise admin_service.AdminError("--project", f"no project named {name!r}")
                db.add(ProjectMember(project_id=project.id, user_id=user.id))
    except admin_service.AdminError as exc:
        print(f"error: {exc.field}: {exc.message}", file=sys.stderr)
        return 2
    finally:
        db.close()
        dispose()
    print_credentials(out, f"Created {role} account (password shown only now):", email, password)
    return 0


def create_token(settings: Settings, *, name: str, scopes: Sequence[str], out: Print = print) -> int:
    from app.auth import service as auth_service

    db, dispose = _session(settings)
    try:
        with db.begin():
            row, plaintext = auth_service.create_api_token(db, name=name, scopes=list(scopes), created_by=None)
            scope_list = ", ".join(row.scopes)
    finally:
        db.close()
        dispose()
    out(f"API token “{name}” ({scope_list}); shown only now, stored hashed:")
    out(f"    {plaintext}")
    out("Send it as: Authorization: Bearer <token>")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ranklab", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    boot = commands.add_parser("bootstrap", help="migrate the database; first run: admin, demo labeler, demo project")
    boot.add_argument("--no-demo", action="store_true", help="create neither the demo labeler nor the demo project")
    commands.add_parser("serve", help="run the web server (settings: RANKLAB_HOST, RANKLAB_PORT, RANKLAB_WEB_WORKERS)")
    commands.add_parser("migrate", help="only run the database migrations")
    user = commands.add_parser("create-user", help="create an account with a generated password")
    user.add_argument("email")
    user.add_argument("--role", choices=[r.value for r in Role], default=Role.labeler.value)
    user.add_argument(
        "--project",
        action="append",
        default=[],
        metavar="NAME",
        help="make the user a member of this project (repeatable)",
    )
    token = commands.add_parser("create-token", help="create an API token")
    token.add_argument("name", help="what the token is for, e.g. 'nightly export'")
    token.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=[s.value for s in TokenScope],
        help="repeatable: upload, export, admin",
    )
    from app.simulation import cli as simulation_cli

    simulation_cli.add_arguments(
        commands.add_parser(
            "simulate", help="run training rounds with a scripted labeling team over HTTP (docs/simulation.md)"
        )
    )
    from app.backup import cli as backup_cli

    backup_cli.add_arguments(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = get_settings()
    if args.command == "bootstrap":
        from app.admin.service import AdminError

        try:
            bootstrap(settings, demo=not args.no_demo)
        except AdminError as exc:  # e.g. RANKLAB_ADMIN_EMAIL already belongs to a labeler
            print(f"error: {exc.field}: {exc.message} (setting RANKLAB_ADMIN_EMAIL)", file=sys.stderr)
            return 2
        return 0
    if args.command == "migrate":
        migrate(settings)
        return 0
    if args.command == "serve":
        serve(settings)
        return 0
    if args.command == "simulate":
        from app.simulation import cli as simulation_cli

        return simulation_cli.run(args)
    if args.command in ("export-all", "import-all"):
        from app.backup import cli as backup_cli

        return backup_cli.run(args, settings)
    if args.command == "create-user":
        return create_user(settings, email=args.email, role=args.role, project_names=args.project)
    return create_token(settings, name=args.name, scopes=args.scope)


if __name__ == "__main__":
    sys.exit(main())
