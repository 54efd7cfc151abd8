"""The service's tests. Before any of them imports the app, the private names it imports from
libraries are checked: a release that moved one fails here with a sentence saying which."""

from .private_names import missing_imports

if missing := missing_imports():
    raise ImportError("\n".join(missing))
