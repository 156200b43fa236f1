"""The Extensions Index catalog entry ``IterMaskSlicer.json``: the rules of the index's schema v1.0.2 and of its
``scripts/check_description_files.py`` that can be checked without a network, and its agreement with the top
CMakeLists.

The schema is not copied here: the index publishes it under the 3D Slicer licence, whose terms would have to travel
with any copy, so its rules are written out below instead.
"""
import json
import re
import struct
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import REPO

ENTRY = REPO / "IterMaskSlicer.json"
NAME = ENTRY.stem
SCHEMA = ("https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/"
          "slicer-extension-catalog-entry-schema-v1.0.2.json#")
# schema v1.0.2: each property's JSON type (and allowed values); "additionalProperties": false
PROPERTIES = {"$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
              "build_dependencies": list, "dicom_support_rule": str, "build_subdirectory": str, "enabled": bool,
              "tier": int}
REQUIRED = {"$schema", "category", "scm_url"}
# a part of check_description_files.py's ACCEPTED_EXTENSION_CATEGORIES (the ones that could describe this extension)
CATEGORIES = {"Active Learning", "Analysis", "Cardiac", "Converters", "DICOM", "Developer Tools", "Diffusion",
              "Examples", "Exporter", "Filtering", "IGT", "Informatics", "Neuroimaging", "Nuclear Medicine",
              "Pipelines", "Planning", "Quantification", "Radiotherapy", "Registration", "Rendering", "Segmentation",
              "Sequences", "Shape Analysis", "Simulation", "Surface Models", "Tractography", "Training", "Utilities"}
REPOSITORY_PREFIXES = ("Slicer", "Slicer-", "Slicer_", "SlicerExtension-", "SlicerExtension_")


@pytest.fixture(scope="module")
def entry() -> dict:
    return json.loads(ENTRY.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def cmake() -> str:
    return (REPO / "CMakeLists.txt").read_text()


def cmake_set(cmake: str, variable: str) -> str:
    match = re.search(rf'set\s*\(\s*{variable}\s+"?([^")]*)"?\s*\)', cmake)
    assert match, f"{variable} is not set in CMakeLists.txt"
    return match.group(1)


def test_the_entry_follows_schema_v1_0_2(entry):
    assert entry["$schema"] == SCHEMA
    assert REQUIRED <= set(entry) <= set(PROPERTIES)
    for key, value in entry.items():
        assert type(value) is PROPERTIES[key], key
    assert entry.get("scm_type", "git") in ("git", "local")
    assert all(isinstance(name, str) for name in entry.get("build_dependencies", []))
    assert 1 <= entry.get("tier", 1) <= 5


def test_the_index_script_rules(entry):
    raw = ENTRY.read_bytes()
    assert b"\r" not in raw  # LF line endings only
    assert not NAME.lower().startswith("slicer")  # the extension name must not start with "Slicer" …
    url = entry["scm_url"]
    assert "://" in url and urlsplit(url).scheme in ("git", "https")
    repository = Path(urlsplit(url.strip().strip("/")).path).stem
    assert repository.startswith(REPOSITORY_PREFIXES)  # … and the repository's name must
    assert entry["category"] in CATEGORIES
    assert (REPO / "LICENSE").is_file()


def test_the_entry_agrees_with_the_top_cmakelists(entry, cmake):
    # the index reads the extension name from the first project() call and requires the file to be named after it
    assert re.findall(r"project\s*\(\s*([^\s\)\n\r]+)", cmake, re.IGNORECASE)[0] == NAME
    assert cmake_set(cmake, "EXTENSION_CATEGORY") == entry["category"]
    assert cmake_set(cmake, "EXTENSION_DEPENDS").split() == entry["build_dependencies"] == ["PyTorch"]
    # the index expands no CMake variables: its URLs are literal, and they name the repository of scm_url
    repository = entry["scm_url"].removesuffix(".git")
    for variable in ("EXTENSION_HOMEPAGE", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert cmake_set(cmake, variable).startswith(repository + ("#" if variable == "EXTENSION_HOMEPAGE" else "/"))


def test_the_icon_and_screenshots_the_cmakelists_name_are_pngs_in_the_repository(cmake):
    """Their URLs point into the repository (``…/raw/<branch>/<path>`` or ``raw.githubusercontent.com/…/<path>``):
    the files must be there, tracked, and PNG; the icon 128×128 as the Extensions Manager shows it."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    files = {}
    for variable in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        for url in cmake_set(cmake, variable).split():
            path = next((p for p in tracked if url.endswith("/" + p)), None)
            assert path, f"{variable} {url} names no file of the repository"
            assert (REPO / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", url
            files[variable] = REPO / path
    width, height = struct.unpack(">II", files["EXTENSION_ICONURL"].read_bytes()[16:24])
    assert (width, height) == (128, 128)


def test_the_repository_is_under_the_index_limit_of_100_mb():
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True).stdout.split(b"\0")
    size = sum((REPO / name.decode()).stat().st_size for name in tracked if name and (REPO / name.decode()).is_file())
    assert size < 100 * 2**20
