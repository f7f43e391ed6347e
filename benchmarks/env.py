"""The bench environment: the external programs a run needs (installed when
missing), where they live, and what the results record about the machine and
the versions.

Installs: `wrk` and `nginx` from Debian (apt-get), LiteLLM from PyPI into its
own virtualenv under `~/.cache/lectr/` (its dependency tree conflicts with
ours; the first install takes about 1.5 minutes, later runs reuse it).
PostgreSQL and redis-server come through `devtools.services`.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from devtools.install import program

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("LECTR_BENCH_CACHE", Path.home() / ".cache" / "lectr"))
LITELLM_VENV = CACHE / "bench-venv-litellm"
LITELLM_SPEC = "litellm[proxy]==1.106.2"


def module_at(rev: str, path: str, folder: Path) -> ModuleType:
    """The Python file `path` (relative to the repository) as it was at git
    revision `rev`, imported under a name of its own (for before/after runs
    in one process)."""
    source = subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, check=True, text=True
    ).stdout
    file = folder / f"{Path(path).stem}_{rev.replace('/', '_')}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(f"{Path(path).stem}_at_{len(sys.modules)}", file)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def log(msg: str) -> None:
    """Progress on stderr (the runner prefixes elapsed time itself)."""
    print(msg, file=sys.stderr, flush=True)


def binary(name: str, package: str) -> str:
    """Path of a program, installing its Debian package first when missing."""
    return str(program(name, package, f"/usr/sbin/{name}"))


def wrk() -> str:
    return binary("wrk", "wrk")


def nginx() -> str:
    return binary("nginx", "nginx")


def litellm() -> str:
    """The `litellm` command of the dedicated virtualenv, created on first use."""
    exe = LITELLM_VENV / "bin" / "litellm"
    marker = LITELLM_VENV / ".lectr-spec"
    if exe.exists() and marker.exists() and marker.read_text().strip() == LITELLM_SPEC:
        return str(exe)
    log(f"installing {LITELLM_SPEC} into {LITELLM_VENV} (first run only, ~1.5 min)")
    py = shutil.which("python3") or sys.executable
    if not (LITELLM_VENV / "bin" / "python").exists():
        subprocess.run([py, "-m", "venv", str(LITELLM_VENV)], check=True)
    pip = [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, LITELLM_SPEC], check=True)
    marker.write_text(LITELLM_SPEC + "\n")
    return str(exe)


def _run(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({type(e).__name__})"
    return (r.stdout + r.stderr).strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def machine() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory": _mem_total(),
        "kernel": platform.release(),
        "os": _run(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
    }


def lectr_build() -> dict[str, Any]:
    """Which Lectr the runner's interpreter imports, and how it was built."""
    import lectr
    from lectr import _core

    where = Path(lectr.__file__).resolve().parent
    profile = getattr(_core, "BUILD_PROFILE", "unknown")
    editable = ROOT / "python" in where.parents or where == ROOT / "python" / "lectr"
    sha = _run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"])
    dirty = _run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    return {
        "version": lectr.__version__,
        "git": sha + ("+dirty" if dirty and "unavailable" not in dirty else ""),
        "path": str(where),
        "build": f"{'editable (maturin develop)' if editable else 'installed wheel'}, {profile} build",
    }


def versions(litellm_exe: str | None) -> dict[str, Any]:
    from importlib.metadata import version

    out: dict[str, Any] = {
        "python": platform.python_version(),
        "lectr": lectr_build(),
        "granian": version("granian"),
        "nginx": _run([nginx(), "-v"]).removeprefix("nginx version: "),
        "wrk": _run([wrk(), "-v"]).splitlines()[0].split(" Copyright")[0],
    }
    if litellm_exe:
        py = str(Path(litellm_exe).parent / "python")
        out["litellm"] = _run([py, "-c", "import importlib.metadata as m; print(m.version('litellm'))"])
        out["litellm_server"] = "uvicorn " + _run(
            [py, "-c", "import importlib.metadata as m; print(m.version('uvicorn'))"]
        )
    return out
