"""An OpenAI-compatible HTTP server over the generation engine (FastAPI on uvicorn)."""
