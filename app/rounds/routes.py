"""Routes for rounds: the admin pages (filled in by the UI's owner) and the /api/v1 API (api.py)."""

from app.rounds.api import api_router  # noqa: F401  (app.main includes `api_router` and `router`)
from app.rounds.pages import router  # noqa: F401
