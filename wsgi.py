"""WSGI entry point: gunicorn runs ``wsgi:app``."""

import sys

from dotenv import load_dotenv

load_dotenv()  # fills in what the environment lacks; the environment always wins

from app import create_app  # noqa: E402
from app.settings import SettingsError  # noqa: E402

try:
    app = create_app()
except SettingsError as error:
    print(f"error: {error}", file=sys.stderr, flush=True)
    sys.exit(4)  # gunicorn's "App failed to load": it stops instead of restarting the worker
