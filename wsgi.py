"""WSGI entry point: gunicorn runs ``wsgi:app``."""

from dotenv import load_dotenv

load_dotenv()  # fills in what the environment lacks; the environment always wins

from app import create_app  # noqa: E402

app = create_app()
