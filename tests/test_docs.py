"""The README and docs/ against the repository: links lead somewhere, paths and modules named exist,
and every setting is documented with its default."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from app.settings import DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
SETTINGS_PAGE = ROOT / "docs" / "settings.md"
# Copied on import: a fixture (conftest's ``database``) points DATABASE_URL elsewhere during each test.
DECLARED = dict(DEFAULTS)

FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n.*?^[ \t]*\1[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^[ \t]*\[[^\]]+\]:[ \t]*<?(\S+?)>?(?:[ \t].*)?$", re.MULTILINE)
SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")  # http:, https:, mailto:: not a file here
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
REPO_PATH = re.compile(r"(?:app|tests|docs)/[\w./-]*")  # a code span naming a file or folder of ours
MODULE = re.compile(r"python3? -m ((?:app|tests)(?:\.\w+)*)")  # python -m app.store.db
PROCFILE_SETTING = re.compile(r"\$\{([A-Z][A-Z0-9_]*):-([^}]*)\}")  # ${PORT:-8000}


def pages() -> list[Path]:
    """The README and every page in docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose(text: str) -> str:
    """The text without fenced code blocks, whose brackets are code, not links."""
    return FENCE.sub("", text)


def links(text: str) -> list[str]:
    """Every link and image target in Markdown text, outside code."""
    text = CODE_SPAN.sub("", prose(text))
    return LINK.findall(text) + REFERENCE.findall(text)


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a Markdown page's headings (a repeated heading gets -1, -2, ...)."""
    found: set[str] = set()
    for heading in HEADING.findall(prose(page.read_text())):
        base = anchor = slug(heading)
        count = 0
        while anchor in found:
            count += 1
            anchor = f"{base}-{count}"
        found.add(anchor)
    return found


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """A sentence for each relative link in ``page`` that leads to no file, or to no heading."""
    problems = []
    for href in links(page.read_text()):
        if not href or SCHEME.match(href):
            continue
        target, _, anchor = unquote(href).partition("#")
        path = (root / target.lstrip("/") if target.startswith("/") else page.parent / target).resolve()
        if target and (not path.is_relative_to(root) or not path.exists()):
            problems.append(f"{page.relative_to(root)} links to {href}, which is no file in the repository")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            problems.append(f"{page.relative_to(root)} links to {href}, but {path.name} has no such heading")
    return problems


def missing_paths(page: Path, root: Path = ROOT) -> list[str]:
    """A sentence for each path of ours in a code span, or ``python -m`` module, that does not exist."""
    text = page.read_text()
    problems = []
    for _, span in CODE_SPAN.findall(prose(text)):
        if REPO_PATH.fullmatch(span.strip()) and not (root / span.strip()).exists():
            problems.append(f"{page.relative_to(root)} names {span.strip()}, which does not exist")
    for module in MODULE.findall(text):
        path = root.joinpath(*module.split("."))
        if not (path.with_suffix(".py").exists() or (path / "__init__.py").exists()):
            problems.append(f"{page.relative_to(root)} runs python -m {module}, which is no module")
    return problems


def documented_defaults(text: str) -> dict[str, str]:
    """The settings tables' rows: a setting's name -> its default cell, as written."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if len(cells) >= 3 and re.fullmatch(r"`[A-Z][A-Z0-9_]*`", cells[0]):
            rows[cells[0].strip("`")] = cells[1]
    return rows


def declared_settings() -> dict[str, str]:
    """Every setting the service reads, with its default: app/settings.py's, and the Procfile's
    (gunicorn's port, workers, connections and graceful timeout, read where it starts)."""
    procfile = dict(PROCFILE_SETTING.findall((ROOT / "Procfile").read_text()))
    return {**procfile, **DECLARED}


def undocumented(declared: dict[str, str], documented: dict[str, str]) -> list[str]:
    """A sentence for each setting missing from the page, shown with another default, or gone."""
    problems = []
    for name, default in declared.items():
        cell = documented.get(name)
        shown = f"`{default}`" if default else "unset"
        if cell is None:
            problems.append(f"{name} is read by the service but has no row in docs/settings.md")
        elif cell != shown and not (not default and cell.startswith("unset ")):
            problems.append(f"{name} defaults to {default!r}, but docs/settings.md gives {cell!r}")
    for name in documented.keys() - declared.keys():
        problems.append(f"docs/settings.md documents {name}, which nothing reads")
    return problems


@pytest.mark.parametrize("page", pages(), ids=lambda page: page.name)
def test_every_relative_link_leads_to_a_file(page: Path) -> None:
    problems = broken_links(page)
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("page", pages(), ids=lambda page: page.name)
def test_every_path_and_module_named_exists(page: Path) -> None:
    problems = missing_paths(page)
    assert problems == [], "\n".join(problems)


def test_the_readme_keeps_its_commands_and_leads_to_docs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme
    assert "make test" in readme
    targets = set(links(readme))
    assert "docs/chat.png" in targets
    for name in ("deploying", "api", "settings", "architecture", "testing", "performance"):
        assert f"docs/{name}.md" in targets, f"README.md does not link to docs/{name}.md"


def test_every_setting_is_documented_with_its_default() -> None:
    documented = documented_defaults(SETTINGS_PAGE.read_text())
    problems = undocumented(declared_settings(), documented)
    assert problems == [], "\n".join(problems)
    assert documented["OPENAI_MODEL"] == "`gpt-4o-mini`"
    assert documented["PORT"] == "`8000`"


def test_a_broken_link_or_anchor_is_found(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "api.md").write_text("# The API\n\n## Chat routes\n")
    page = tmp_path / "README.md"
    page.write_text(
        "See [the API](docs/api.md#chat-routes), [gone](docs/gone.md), ![a picture](docs/none.png),\n"
        "[a heading](docs/api.md#no-such-part), [outside](../elsewhere.md), [ours](#see-here),\n"
        "[the web](https://example.com/x.md) and [mail](mailto:a@example.com).\n\n"
        "# See here\n\n```js\nconst [a, b] = f(c)(d);\nx[0](gone.md);\n```\n\n`[code](gone.md)`\n"
    )
    assert broken_links(page, tmp_path) == [
        "README.md links to docs/gone.md, which is no file in the repository",
        "README.md links to docs/none.png, which is no file in the repository",
        "README.md links to docs/api.md#no-such-part, but api.md has no such heading",
        "README.md links to ../elsewhere.md, which is no file in the repository",
    ]


def test_an_old_path_or_module_is_found(tmp_path: Path) -> None:
    (tmp_path / "app" / "store").mkdir(parents=True)
    (tmp_path / "app" / "store" / "db.py").write_text("")
    page = tmp_path / "README.md"
    page.write_text(
        "`app/store/db.py` and `app/store/`, not `app/db.py`.\n\n"
        "```sh\npython -m app.store.db\npython -m app.db\npython -m pytest\n```\n"
    )
    assert missing_paths(page, tmp_path) == [
        "README.md names app/db.py, which does not exist",
        "README.md runs python -m app.db, which is no module",
    ]


def test_a_setting_without_its_row_or_default_is_named() -> None:
    declared = {"NEW_SETTING": "5", "OPENAI_MODEL": "gpt-4o-mini", "API_KEYS": "", "REDIS_URL": ""}
    documented = {
        "OPENAI_MODEL": "`gpt-4o`",
        "API_KEYS": "unset",
        "REDIS_URL": "unset (then memory://)",
        "OLD_SETTING": "`1`",
    }
    assert undocumented(declared, documented) == [
        "NEW_SETTING is read by the service but has no row in docs/settings.md",
        "OPENAI_MODEL defaults to 'gpt-4o-mini', but docs/settings.md gives '`gpt-4o`'",
        "docs/settings.md documents OLD_SETTING, which nothing reads",
    ]
