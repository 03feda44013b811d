"""Routes for evaluations: the admin pages (pages.py) and the /api/v1 API (api.py)."""

from app.evaluation.api import api_router  # noqa: F401  (app.main includes `api_router` and `router`)
from app.evaluation.pages import router  # noqa: F401
