"""``pip install .`` and ``pip install -e .`` both make ``import attnprobe.adapters`` work."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import attnprobe.adapters

REPO = Path(__file__).resolve().parents[1]


def test_the_adapters_subpackage_comes_from_the_adapters_folder_beside_the_package() -> None:
    # Whichever checkout (or installed copy) attnprobe was imported from, attnprobe.adapters is
    # the top-level adapters/ folder of that same source tree, not another copy.
    package = Path(attnprobe.__file__).resolve().parent
    adapters = Path(attnprobe.adapters.__file__).resolve()
    assert adapters in (package.parent / "adapters" / "__init__.py",
                        package / "adapters" / "__init__.py")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy of the sources: setuptools reuses a checkout's build/ folder, where files
    # deleted from the sources would linger and be packed.
    source = tmp_path_factory.mktemp("source") / "attnprobe"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "data", "runs", "checkpoints", "__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("attnprobe-*.whl")
    return built


def test_wheel_holds_adapters_as_a_subpackage_and_type_marker(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "attnprobe/adapters/__init__.py" in names
    assert "attnprobe/adapters/conformer.py" in names
    assert "attnprobe/py.typed" in names
    assert not any(name.startswith("adapters/") for name in names)


def test_regular_install_imports_adapters_outside_the_repo(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    code = ("import sys; sys.path = [p for p in sys.path if 'attnprobe' not in p and p != '']; "
            f"sys.path.insert(0, {str(target)!r}); import attnprobe.adapters as a; "
            "print(a.__file__); print(a.registry.families())")
    # -S skips site-packages' editable-install finder, so only the installed copy can be found;
    # torch comes from the environment's site-packages, added back explicitly.
    import torch

    torch_site = str(Path(torch.__file__).resolve().parents[1])
    result = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path.append("
                             f"{torch_site!r}); " + code], check=True, capture_output=True,
                            text=True, cwd=tmp_path, timeout=120)
    assert str(target) in result.stdout
    assert "attnprobe-conformer" in result.stdout


def test_wheel_holds_every_subpackage_of_the_source_tree(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    source = sorted(str(path.relative_to(REPO)) for path in (REPO / "attnprobe").rglob("__init__.py"))
    missing = [path for path in source if path not in names]
    assert not missing, f"add these packages to [tool.setuptools] packages in pyproject: {missing}"


def test_wheel_carries_the_library_not_the_experiments(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    experiments = [name for name in names if name.startswith(("benchmarks/", "tests/"))
                   or "/corpus/" in name or "espeak" in name or "festival" in name
                   or "flite" in name or "training_set" in name or "reproduction" in name]
    assert not experiments, f"speech synthesis and experiments belong under benchmarks/: {experiments}"
    assert {"attnprobe/features.py", "attnprobe/labels.py"} <= names
