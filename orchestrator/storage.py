"""Where Tune keeps a sweep: a local folder, or any URI that pyarrow opens (s3://bucket/prefix,
gs://bucket/prefix, file:///abs/path, hdfs://...). Ray Tune takes the same strings as `storage_path`.

A sweep's location is a plain string: an absolute local path, or a URI (its query string, e.g.
`?region=us-west-2`, kept at the end). The helpers below join, split, read and list such strings through
pyarrow's filesystems, so `run`, `resume` and Tune see the same place whichever kind it is.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pyarrow
import pyarrow.fs as pafs

from orchestrator.errors import OrchestratorError

DEFAULT_ROOT = "ray_results"
JOB_DEFAULT_ROOT = "~/ray_results"
"""The default under `ray job submit --working-dir`: Ray Tune's own default folder, on the machine of the job's
driver (the head)."""
STORAGE_ENV = "ORCHESTRATOR_STORAGE_PATH"
"""The default storage when a sweep sets no `storage_path` (the cluster files set it on the head)."""
RAY_WORKING_DIR_COPIES = ("runtime_resources", "working_dir_files")
"""Where Ray unpacks a job's `working_dir` (`<session>/runtime_resources/working_dir_files/_ray_pkg_<hash>/`), the
job's working directory. Ray deletes such a copy once no job uses it (and a changed working tree is another copy),
so Tune's folder must not be in it: `resume` would find nothing."""


def is_uri(location: str | os.PathLike) -> bool:
    return "://" in str(location)


def normalize(location: str | os.PathLike) -> str:
    """A URI unchanged but for a trailing '/', a local path made absolute."""
    text = str(location)
    if is_uri(text):
        base, sep, query = text.partition("?")
        return base.rstrip("/") + sep + query
    return str(Path(text).expanduser().resolve())


def in_ray_working_dir_copy(folder: str | os.PathLike) -> bool:
    """Whether `folder` lies in a copy of a job's working_dir that Ray unpacked (RAY_WORKING_DIR_COPIES)."""
    parts = Path(folder).resolve().parts
    n = len(RAY_WORKING_DIR_COPIES)
    return any(parts[i : i + n] == RAY_WORKING_DIR_COPIES for i in range(len(parts) - n + 1))


def root(storage_path: str | None) -> str:
    """The folder that holds sweeps: `storage_path`, else $ORCHESTRATOR_STORAGE_PATH, else ./ray_results, or
    ~/ray_results when the working directory is Ray's copy of a job's working_dir."""
    default = JOB_DEFAULT_ROOT if in_ray_working_dir_copy(Path.cwd()) else DEFAULT_ROOT
    return normalize(storage_path or os.environ.get(STORAGE_ENV) or default)


def _split(location: str) -> tuple[str, str]:
    base, sep, query = normalize(location).partition("?")
    return base, sep + query


def join(location: str, *parts: str) -> str:
    base, query = _split(location)
    return "/".join([base, *parts]) + query


def name(location: str) -> str:
    return _split(location)[0].rsplit("/", 1)[-1]


def parent(location: str) -> str:
    base, query = _split(location)
    return base.rsplit("/", 1)[0] + query


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) of a location; OrchestratorError naming it when pyarrow cannot."""
    text = normalize(location)
    if not is_uri(text):
        return pafs.LocalFileSystem(), text
    try:
        return pafs.FileSystem.from_uri(text)
    except (pyarrow.ArrowException, ValueError, OSError) as error:
        raise OrchestratorError(
            f"storage_path {text!r}: pyarrow cannot open it ({error}). Use a local folder or "
            f"a URI such as s3://bucket/prefix or gs://bucket/prefix."
        ) from error


def exists(location: str) -> bool:
    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_text(location: str) -> str:
    fs, path = filesystem(location)
    with fs.open_input_stream(path) as stream:
        return stream.read().decode()


def write_text(location: str, text: str) -> None:
    """Whole or not at all: a reader never sees a half-written file. Locally (a path or file://) the text goes to a
    temporary name beside it, flushed to disk, then renamed over it; an object store (s3://, gs://) publishes an
    object only once its upload completes, so there it is written in place."""
    fs, path = filesystem(location)
    folder = path.rsplit("/", 1)[0]
    fs.create_dir(folder, recursive=True)
    if not isinstance(fs, pafs.LocalFileSystem):
        with fs.open_output_stream(path) as stream:
            stream.write(text.encode())
        return
    tmp = f"{folder}/.{Path(path).name}.{uuid.uuid4().hex[:8]}.tmp"  # made as `open` makes any file (umask), not 0600
    try:
        with open(tmp, "x") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(location: str) -> None:
    """Write and remove a probe file in `location` (made if missing); OrchestratorError naming it and the reason when
    that fails, so that a sweep whose storage cannot take its checkpoints fails before it starts."""
    fs, path = filesystem(location)
    probe = f"{path}/.orchestrator-probe-{uuid.uuid4().hex}"
    try:
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(probe) as stream:
            stream.write(b"probe")
        fs.delete_file(probe)
    except (OSError, pyarrow.ArrowException) as error:
        raise OrchestratorError(
            f"storage_path {normalize(location)!r}: cannot write there ({_reason(fs, path, error)}). Nothing was "
            f"started. Give a folder or URI this machine can write (the sweep's storage_path, "
            f"${STORAGE_ENV}, or --storage-path for resume)."
        ) from None


def _reason(fs: pafs.FileSystem, path: str, error: Exception) -> str:
    """A file in the way of a local folder, or the filesystem's own words (first line)."""
    if isinstance(fs, pafs.LocalFileSystem):
        blocked = next((p for p in (Path(path), *Path(path).parents) if p.exists() and not p.is_dir()), None)
        if blocked is not None:
            return f"{blocked} is a file, not a folder"
    return str(error).splitlines()[0]


def folders(location: str) -> list[str]:
    """The names of the folders directly inside `location` (none if it does not exist)."""
    fs, path = filesystem(location)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
    return sorted(info.base_name for info in infos if info.type == pafs.FileType.Directory)
