"""The demonstrations domain's routers, as app/main.py's DOMAINS expects them: the /api/v1 upload
and export, and the admin's demonstrations page."""

from app.admin.demonstrations import router
from app.demonstrations.api import api_router

__all__ = ["api_router", "router"]
