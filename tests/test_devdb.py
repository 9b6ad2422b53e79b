"""`collector.devdb` from an installed package: its cluster script is package data, found beside
the module, and the checkout's `deploy/devdb.sh` runs that same script. No cluster is started."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from collector import devdb

ROOT = Path(__file__).resolve().parent.parent


def test_the_script_ships_beside_the_module() -> None:
    assert devdb.script_path() == Path(devdb.__file__).resolve().parent / "devdb.sh"
    assert devdb.script_path().is_file()


def test_the_wheel_declares_the_script_as_package_data() -> None:
    with open(ROOT / "pyproject.toml", "rb") as f:
        package_data = tomllib.load(f)["tool"]["setuptools"]["package-data"]
    assert package_data["collector"] == ["devdb.sh"]


def test_the_checkout_wrapper_runs_the_packaged_script() -> None:
    r = subprocess.run(["bash", "deploy/devdb.sh", "no-such-step"], cwd=ROOT, capture_output=True, text=True)
    assert (r.returncode, r.stderr) == (2, "usage: deploy/devdb.sh install|start|stop|url\n")


def test_the_cluster_lives_in_devdb_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "url").write_text("postgresql://postgres@127.0.0.1:5999/postgres\n")
    monkeypatch.setenv("DEVDB_DIR", str(tmp_path))
    assert devdb.run_script("url") == "postgresql://postgres@127.0.0.1:5999/postgres"


def test_without_devdb_dir_the_cluster_lives_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".devdb").mkdir()
    (tmp_path / ".devdb" / "url").write_text("postgresql://postgres@127.0.0.1:5998/postgres\n")
    monkeypatch.delenv("DEVDB_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert devdb.run_script("url") == "postgresql://postgres@127.0.0.1:5998/postgres"


def test_a_failed_step_names_the_script_and_its_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVDB_DIR", str(tmp_path / "none"))
    with pytest.raises(devdb.DevDBError, match=r"^devdb.sh url failed:\n.*No such file"):
        devdb.run_script("url")


@pytest.mark.slow
def test_an_installed_wheel_finds_its_script(tmp_path: Path) -> None:
    src, wheels, site = tmp_path / "src", tmp_path / "wheels", tmp_path / "site"
    # A copy, because setuptools builds in the source tree and the checkout should stay clean.
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("collector", "trading_bot"):
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(src)], check=True, timeout=240)
    (wheel,) = wheels.glob("ig_fx_collector-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=120)
    probe = "from collector import devdb; p = devdb.script_path(); print(devdb.__file__); print(p, p.is_file())"
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == [f"{site}/collector/devdb.py", f"{site}/collector/devdb.sh True"]
