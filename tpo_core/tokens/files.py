"""Run files on disk: written atomically and only over our own, read strictly.

A result is written to a temporary name, flushed and renamed, so a reader never sees half
a file; nothing but a regular file holding one of our runs is ever replaced (a device, a
FIFO, a link or anyone else's file is refused). A run file is read only if it is a regular
file of standard JSON whose curves hold what its config says (:meth:`TrainResult.from_dict`).
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from pathlib import Path

from tpo_core.tokens.train import CURVES, TrainResult

RESULTS = Path(__file__).parent / "results"  # the grids shipped with the package


def _json_ready(x, digits: int | None = None):
    """``x`` with NaN and infinities as None (JSON has no NaN), floats rounded to ``digits``
    significant digits when given."""
    if isinstance(x, float):
        if not math.isfinite(x):
            return None
        return float(f"{x:.{digits}g}") if digits else x
    if isinstance(x, dict):
        return {k: _json_ready(v, digits) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_ready(v, digits) for v in x]
    return x


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write ``payload`` as standard JSON (NaN as null) via a temporary file, flushed to disk,
    and a rename. Readers never see half a file: the rename is the last step. Refuses to
    replace anything at ``path`` but a regular file (:func:`check_replaceable`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    check_replaceable(path)
    tmp = path.with_name(_temporary_name(path.name))
    with open(tmp, "w") as file:
        file.write(json.dumps(_json_ready(payload), separators=(",", ":"), allow_nan=False))
        file.flush()
        os.fsync(file.fileno())
    tmp.replace(path)


def _temporary_name(name: str) -> str:
    return f".{name}.{os.getpid()}.tmp"


def check_replaceable(path: Path) -> None:
    """Raise ValueError if ``path`` exists and is not a regular file (a device, a FIFO, a
    folder, a symbolic link): a result never replaces one."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return  # nothing there (or a file where a folder should be, which the caller reports)
    if not stat.S_ISREG(mode):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
        raise ValueError(f"{path} exists and is {kind}; results are written only as new files")


def check_ours(path: Path) -> None:
    """Raise ValueError if ``path`` holds anything but a run this program wrote: a device, a
    FIFO, a link (:func:`check_replaceable`) or anyone else's file is never written over."""
    check_replaceable(path)
    if Path(path).exists() and not _is_our_run(path):
        raise ValueError(f"{path} exists and is not a run's file; give a new file name")


def _is_our_run(path: Path) -> bool:
    """Whether the regular file at ``path`` is a run this program wrote (one it may replace),
    or one cut short while it was written: our files begin with their config."""
    try:
        data = read_json(path)
    except ValueError:
        with open(path, "rb") as file:
            return file.read(len(RUN_START)) == RUN_START
    return isinstance(data, dict) and {"config", "provenance"} <= set(data)


RUN_START = b'{"config":'  # how every run file this program writes begins


MAX_JSON_BYTES = 64 * 2**20  # a run's file is well under 1 MB


def read_json(path: Path):
    """The JSON in the regular file at ``path``, parsed strictly (no NaN or Infinity
    literals), or ValueError saying why not: a FIFO, a device or a folder is never opened."""
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror or err}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path} is not a regular file")
    if info.st_size > MAX_JSON_BYTES:
        raise ValueError(f"{path} holds {info.st_size} bytes, more than a run's file can")

    def refuse(literal):
        raise ValueError(f"{literal} is not standard JSON")

    try:
        return json.loads(path.read_bytes(), parse_constant=refuse)
    except RecursionError:
        raise ValueError(f"{path} nests too deeply to be a run's file") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def write_run(path: Path, result: TrainResult, stamp: dict) -> None:
    """One run's file: its config exactly (a resumed grid compares it), its curves to 6
    significant digits, and its provenance."""
    data = result.to_dict() | {"provenance": stamp}
    write_json_atomic(path, data | {k: _json_ready(data[k], 6) for k in CURVES})


def check_output(path: Path, folder: bool = False) -> None:
    """Raise ValueError, before any training, if results cannot be written at ``path`` (one
    file, or with ``folder`` a folder of them). Creates the folder that will hold them.

    An existing file is replaced only if it is a regular file holding a run this program
    wrote; a device, a FIFO, a link or anyone else's file is never written over."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file, not a folder for the grid's runs")
    if not folder and path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name, such as {path / 'run.json'}")
    if not folder:
        check_ours(path)
    directory = path if folder else path.parent
    above = next(p for p in [directory, *directory.parents] if p.exists())
    if not above.is_dir():
        raise ValueError(f"cannot write {path}: {above} is a file, not a folder")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        raise ValueError(f"cannot write files in {directory}: {err.strerror or err}") from None
    if not folder:
        check_name_length(directory, path.name)


def check_name_length(directory: Path, name: str) -> None:
    """Raise ValueError if the file system cannot hold a file named ``name`` (with its
    temporary name) in ``directory``."""
    try:
        limit = os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    if len(_temporary_name(name).encode()) > limit:
        raise ValueError(
            f"the file name {name[:40]}... is {len(name.encode())} bytes; this file system "
            f"holds names up to {limit} bytes (less {len(_temporary_name('').encode())} for "
            "the temporary name)"
        )


def load_run(path: Path) -> TrainResult:
    """The run stored at ``path`` (its provenance included)."""
    data = read_json(path)
    try:
        return TrainResult.from_dict(data, source=str(path))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path} is not a finished run: {err}") from None


def load_runs(folder: Path) -> list[TrainResult]:
    """Every finished run in ``folder`` (temporary files are ignored), with its provenance."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"no folder {folder}")
    return [load_run(path) for path in sorted(folder.glob("*.json"))]


def shipped_runs(name: str) -> list[TrainResult]:
    """The runs of a grid shipped with the package (``tpo_core/tokens/results/<name>``)."""
    if not (RESULTS / name).is_dir():
        raise ValueError(f"no shipped results named {name!r}; there are: {', '.join(shipped())}")
    return load_runs(RESULTS / name)


def shipped() -> list[str]:
    """The names of the grids shipped with the package."""
    return sorted(p.name for p in RESULTS.iterdir() if p.is_dir())
