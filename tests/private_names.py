"""The private names the service imports from libraries, checked (by ``tests/__init__.py``) before
anything imports the app.

A private name that moved would make every test fail at collection with a bare ImportError; this
says instead which hook it is, where it is used, and which release moved it. It imports nothing
of the app. The other private hooks are checked in tests/test_contracts.py.
"""

from __future__ import annotations

import importlib
from importlib import metadata

# (library, module, name, where it is used)
PRIVATE_IMPORTS = [
    ("openai", "openai._models", "FinalRequestOptions", "app/upstream/llm.py and client.py"),
    ("httpx2", "httpx2._utils", "get_environment_proxies", "app/upstream/connections.py (proxied)"),
]


def broken(library: str, hook: str, where: str) -> str:
    """The sentence a failed contract gives."""
    return (
        f"{library} {metadata.version(library)} changed {hook}, which {where} relies on: "
        f"read the comment there before taking this release, or keep {library} below it in pyproject.toml."
    )


def missing_imports() -> list[str]:
    """A sentence for each private name that can no longer be imported."""
    sentences = []
    for library, module, name, where in PRIVATE_IMPORTS:
        try:
            getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            sentences.append(broken(library, f"{module}.{name}", where))
    return sentences
