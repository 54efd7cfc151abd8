"""The page's third-party files: what the pinned versions publish, and nothing else."""

from __future__ import annotations

import json
import shutil
import urllib.error
from pathlib import Path

import pytest

from . import vendor


def test_every_vendored_file_is_what_its_manifest_says() -> None:
    assert vendor.check() == []
    manifest = json.loads(vendor.MANIFEST.read_text())
    assert {name: package["version"] for name, package in manifest["packages"].items()} == {
        name: wanted["version"] for name, wanted in vendor.WANTED.items()
    }
    for name, package in manifest["packages"].items():
        assert package["integrity"].startswith("sha512-")
        assert any("LICENSE" in file for file in package["files"]), f"{name} has no licence"


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    folder = tmp_path / "vendor"
    shutil.copytree(vendor.FOLDER, folder)
    return folder


def test_a_changed_file_fails_the_check(copy: Path) -> None:
    script = copy / "purify-3.5.0.min.js"
    script.write_bytes(script.read_bytes().replace(b"DOMPurify", b"DOMPurifx", 1))
    assert vendor.check(copy) == [
        "purify-3.5.0.min.js differs from dompurify@3.5.0's package/dist/purify.min.js"
    ]


def test_a_missing_or_stray_file_fails_the_check(copy: Path) -> None:
    (copy / "markdown-it.LICENSE").unlink()
    (copy / "extra.js").write_text("// not from any package")
    assert vendor.check(copy) == ["markdown-it.LICENSE is missing", "extra.js is not from any pinned package"]


def test_the_files_are_what_the_registry_publishes_for_the_pins(copy: Path) -> None:
    try:
        assert vendor.check_published() == []
        (copy / "markdown-it-15.0.3.min.js").write_bytes(b"/* changed */")
        assert vendor.check_published(copy) == [
            "markdown-it-15.0.3.min.js differs from what markdown-it@15.0.3 publishes"
        ]
    except urllib.error.URLError as error:  # pragma: no cover - no network to the registry here
        pytest.skip(f"the npm registry cannot be reached: {error.reason}")
