"""Routes for SFT runs: the admin pages (pages.py) and the /api/v1 API (api.py)."""

from app.sft.api import api_router  # noqa: F401  (app.main includes `api_router` and `router`)
from app.sft.pages import router  # noqa: F401
