"""Admin pages: the dashboard and per-project pages; accounts and tokens live in people_routes."""
from fastapi import APIRouter

from app.admin.people_routes import router as people_router

router = APIRouter()
router.include_router(people_router)
