"""Routes for exports (filled in by its owner)."""
from fastapi import APIRouter

router = APIRouter()
