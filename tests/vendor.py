"""The page's third-party code, kept as files: ``make vendor`` fetches the pinned versions from the npm
registry, checks each package against the integrity hash the registry publishes for it, and writes
the files with their licences and a manifest of what each is; ``python -m tests.vendor --check``
proves the files are still what the pinned versions publish.

The pins are the manifest's own versions (``app/static/vendor/vendor.json``): to upgrade a package,
change its ``version`` there and run ``make vendor``. No node, no npm: the registry's HTTP API.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parents[1] / "app" / "static" / "vendor"
MANIFEST = FOLDER / "vendor.json"
REGISTRY = "https://registry.npmjs.org"
# What the page takes from each package, where the package holds it, and what it is called here (a
# name with the version in it, so the app can serve it with a cache lifetime of a year). A bundle
# built from other packages (markdown-it's) keeps their licences too, from the lowest version its
# package.json accepts.
WANTED: dict[str, dict[str, Any]] = {
    "markdown-it": {
        "version": "15.0.3",
        "files": {"package/dist/browser/markdown-it.umd.min.js": "markdown-it-{version}.min.js"},
        "licences": ["package/LICENSE"],
        # Built into its browser file (argparse serves only its command line).
        "bundled": ["entities", "linkify-it", "mdurl", "punycode.js", "uc.micro"],
    },
    "dompurify": {
        "version": "3.5.0",
        "files": {"package/dist/purify.min.js": "purify-{version}.min.js"},
        "licences": ["package/LICENSE", "package/LICENSE-MPL"],
        "bundled": [],
    },
}


class Mismatch(Exception):
    """A package or a file is not what the registry publishes for its version."""


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as answer:
        return bytes(answer.read())


def release(name: str, version: str) -> tuple[dict[str, Any], bytes]:
    """The registry's record of ``name@version`` and its tarball, checked against its integrity hash."""
    record = json.loads(fetch(f"{REGISTRY}/{name}/{version}"))
    tarball = fetch(record["dist"]["tarball"])
    algorithm, _, expected = record["dist"]["integrity"].partition("-")
    if algorithm != "sha512" or base64.b64encode(hashlib.sha512(tarball).digest()).decode() != expected:
        raise Mismatch(f"{name}@{version}: the tarball does not match the registry's integrity hash")
    return record, tarball


def member(tarball: bytes, path: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        extracted = archive.extractfile(path)
        if extracted is None:
            raise Mismatch(f"{path} is not a file in the package")
        return extracted.read()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def refresh(folder: Path = FOLDER) -> dict[str, Any]:
    """Fetch every pinned package, write its files and licences, and the manifest; the manifest."""
    pins = (
        json.loads((folder / "vendor.json").read_text())["packages"]
        if (folder / "vendor.json").exists()
        else {}
    )
    manifest: dict[str, Any] = {"registry": REGISTRY, "packages": {}}
    folder.mkdir(parents=True, exist_ok=True)
    for name, wanted in WANTED.items():
        version = pins.get(name, {}).get("version", wanted["version"])
        record, tarball = release(name, version)
        files: dict[str, Any] = {}
        sources = {path: target.format(version=version) for path, target in wanted["files"].items()}
        sources |= {path: f"{name}.{Path(path).name}" for path in wanted["licences"]}
        for path, target in sources.items():
            data = member(tarball, path)
            (folder / target).write_bytes(data)
            files[target] = {"package": f"{name}@{version}", "path": path, "sha256": sha256(data)}
        for dependency in wanted["bundled"]:
            lowest = record["dependencies"][dependency].lstrip("^~=")
            _, bundled = release(dependency, lowest)
            path, data = licence_of(bundled)
            target = f"{name}.bundled.{dependency}.LICENSE"
            (folder / target).write_bytes(data)
            files[target] = {"package": f"{dependency}@{lowest}", "path": path, "sha256": sha256(data)}
        manifest["packages"][name] = {
            "version": version,
            "integrity": record["dist"]["integrity"],
            "license": record.get("license"),
            "files": files,
        }
    (folder / "vendor.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def licence_of(tarball: bytes) -> tuple[str, bytes]:
    """A package's licence file, whatever its name's case and ending: its path and text."""
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for item in archive.getmembers():
            name = item.name.partition("/")[2]
            if "/" not in name and name.upper().startswith(("LICENSE", "LICENCE")):
                extracted = archive.extractfile(item)
                if extracted is not None:
                    return item.name, extracted.read()
    raise Mismatch("the package has no licence file")


def check(folder: Path = FOLDER) -> list[str]:
    """What differs between the vendored files and the manifest (empty: nothing)."""
    manifest = json.loads((folder / "vendor.json").read_text())
    problems = []
    listed = set()
    for package in manifest["packages"].values():
        for name, file in package["files"].items():
            listed.add(name)
            path = folder / name
            if not path.exists():
                problems.append(f"{name} is missing")
            elif sha256(path.read_bytes()) != file["sha256"]:
                problems.append(f"{name} differs from {file['package']}'s {file['path']}")
    extra = {path.name for path in folder.iterdir()} - listed - {"vendor.json"}
    problems += [f"{name} is not from any pinned package" for name in sorted(extra)]
    return problems


def check_published(folder: Path = FOLDER) -> list[str]:
    """What differs between the vendored files and what the registry publishes for the pins."""
    manifest = json.loads((folder / "vendor.json").read_text())
    problems = []
    for name, package in manifest["packages"].items():
        record, tarball = release(name, package["version"])
        if record["dist"]["integrity"] != package["integrity"]:
            problems.append(f"{name}@{package['version']}: the registry publishes another integrity hash")
        for file_name, file in package["files"].items():
            source = (
                tarball
                if file["package"] == f"{name}@{package['version']}"
                else release(*file["package"].rsplit("@", 1))[1]
            )
            published = member(source, file["path"])
            if (folder / file_name).read_bytes() != published:
                problems.append(f"{file_name} differs from what {file['package']} publishes")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="check the files against the registry, change nothing"
    )
    args = parser.parse_args()
    if args.check:
        problems = check() or check_published()
        for problem in problems:
            print(f"vendor: {problem}", file=sys.stderr)
        print("vendor: the files are what the pinned versions publish" if not problems else "", end="")
        return 1 if problems else 0
    manifest = refresh()
    for name, package in manifest["packages"].items():
        print(f"{name}@{package['version']} {package['integrity']} ({len(package['files'])} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
