"""Download, verify and cache public recommendation datasets.

Standard library only. A dataset is staged in a temporary folder next to its final
place, every file is checked against a pinned SHA-256, and only then is the folder
renamed into place, so an interrupted or corrupted download never leaves a folder
that looks valid.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from ragrec.errors import ConfigError, DatasetUnavailableError

__all__ = ["DATASETS", "DatasetSpec", "default_cache_dir", "download_dataset"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """Where a dataset comes from and what its files must hash to.

    Attributes:
        name: Registry key (``"movielens-small"``).
        url: Official download URL of the zip archive.
        folder: Name of the dataset folder, inside the zip and in the cache.
        sha256: Expected SHA-256 (hex) of each file, keyed by file name.
    """

    name: str
    url: str
    folder: str
    sha256: Mapping[str, str]


DATASETS: Mapping[str, DatasetSpec] = MappingProxyType(
    {
        "movielens-small": DatasetSpec(
            name="movielens-small",
            url="https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",
            folder="ml-latest-small",
            sha256=MappingProxyType(
                {
                    "README.txt": (
                        "63d22ac138e80fae37021797ed8e1b9424b5239dc576a137422adf783ae3f404"
                    ),
                    "links.csv": (
                        "97ad18e4e56a09363c65676b6cb3482ce3e2cea2372a24620c1599c843325f31"
                    ),
                    "movies.csv": (
                        "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07"
                    ),
                    "ratings.csv": (
                        "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646"
                    ),
                    "tags.csv": (
                        "92a9f8bb7916dceef6151209845788c3643f794dfa79d1feaec7121b5960399d"
                    ),
                }
            ),
        ),
    }
)


def default_cache_dir() -> Path:
    """Return the default dataset cache, ``~/.cache/ragrec/datasets``.

    The library never reads environment variables; applications that want a
    different place pass ``dest`` to :func:`download_dataset`.

    Returns:
        The cache directory (not created).
    """
    return Path.home() / ".cache" / "ragrec" / "datasets"


def download_dataset(
    name: str = "movielens-small",
    *,
    dest: Path | None = None,
    source: Path | None = None,
    url: str | None = None,
    timeout: float = 60.0,
    force: bool = False,
) -> Path:
    """Fetch a dataset, verify every file's SHA-256 and cache it under ``dest``.

    If ``dest/<folder>`` already exists and verifies, nothing is fetched (a cache
    hit) unless ``force`` is set. A cached folder that fails verification is an
    error, not silently replaced.

    Args:
        name: Dataset key in :data:`DATASETS`.
        dest: Cache directory; defaults to :func:`default_cache_dir`. Created if
            missing.
        source: A local copy to install instead of downloading: either a folder
            holding the dataset files or a ``.zip`` like the official one. It is
            verified and copied, never modified.
        url: Download URL; defaults to the dataset's official URL. Ignored when
            ``source`` is given.
        timeout: Socket timeout in seconds for the download; must be positive.
        force: Fetch and replace the cached folder even if it verifies.

    Returns:
        The dataset folder, ``dest/<folder>`` (``.../ml-latest-small``).

    Raises:
        ConfigError: ``name`` is unknown or ``timeout`` is not positive.
        DatasetUnavailableError: The download failed, ``source`` is missing or
            malformed, or a file's hash does not match.
    """
    spec = _lookup(name)
    if not timeout > 0:
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
    cache = Path(dest).expanduser() if dest is not None else default_cache_dir()
    target = cache / spec.folder

    if target.is_dir() and not force:
        _verify(spec, target, fix=_cached_fix(spec, target))
        logger.info("%s: using verified cached copy at %s", spec.name, target)
        return target

    cache.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{spec.folder}-", dir=cache))
    try:
        staged = scratch / spec.folder
        staged.mkdir()
        if source is not None:
            _stage_source(spec, Path(source).expanduser(), staged)
            fix = (
                f"{source} is not an intact copy of {spec.folder}; fetch a fresh one from "
                f"{spec.url} and pass it with --from, or download without --from"
            )
        else:
            archive = scratch / f"{spec.folder}.zip"
            _fetch(spec, url or spec.url, archive, timeout=timeout)
            _extract(spec, archive, staged, origin=url or spec.url)
            fix = (
                "the download is corrupted or the upstream files changed; re-download, or "
                f"pass a verified local copy: ragrec data download {spec.name} "
                f"--from /path/to/{spec.folder}"
            )
        _verify(spec, staged, fix=fix)
        _install(staged, target, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    logger.info("%s: verified and installed at %s", spec.name, target)
    return target


def _lookup(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(DATASETS))
        raise ConfigError(f"unknown dataset {name!r}; known datasets: {known}") from None


def _cached_fix(spec: DatasetSpec, target: Path) -> str:
    return (
        f"the cached copy is damaged; delete {target} and re-download "
        f"(force=True, --force in the CLI), or pass a local copy: ragrec data download "
        f"{spec.name} --from /path/to/{spec.folder}"
    )


def _no_network_hint(spec: DatasetSpec) -> str:
    return (
        f"Without network access, pass a local copy: ragrec data download {spec.name} "
        f"--from /path/to/{spec.folder} (a folder or the .zip)"
    )


def _stage_source(spec: DatasetSpec, source: Path, staged: Path) -> None:
    if not source.exists():
        raise DatasetUnavailableError(
            f"{spec.name} source {str(source)!r} does not exist; pass a folder holding "
            f"{', '.join(sorted(spec.sha256))} or the {spec.folder}.zip archive"
        )
    if source.is_dir():
        folder = source
        nested = source / spec.folder
        if not (source / next(iter(spec.sha256))).exists() and nested.is_dir():
            folder = nested
        missing = sorted(f for f in spec.sha256 if not (folder / f).is_file())
        if missing:
            raise DatasetUnavailableError(
                f"{spec.name} source folder {str(folder)!r} lacks {', '.join(missing)}; "
                f"pass the unpacked {spec.folder} folder or its .zip"
            )
        logger.info("%s: copying local copy from %s", spec.name, folder)
        for file in spec.sha256:
            shutil.copyfile(folder / file, staged / file)
        return
    logger.info("%s: extracting local archive %s", spec.name, source)
    _extract(spec, source, staged, origin=str(source))


def _fetch(spec: DatasetSpec, url: str, archive: Path, *, timeout: float) -> None:
    logger.info("%s: downloading %s", spec.name, url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, archive.open("wb") as out:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        raise _download_error(spec, url, f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise _download_error(spec, url, str(exc.reason)) from exc
    except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
        raise _download_error(spec, url, str(exc) or type(exc).__name__) from exc


def _download_error(spec: DatasetSpec, url: str, reason: str) -> DatasetUnavailableError:
    return DatasetUnavailableError(
        f"could not download {spec.name} from {url}: {reason}. {_no_network_hint(spec)}"
    )


def _extract(spec: DatasetSpec, archive: Path, staged: Path, *, origin: str) -> None:
    # Only the expected members are read, by name, so a hostile archive cannot
    # write outside the staging folder.
    try:
        with zipfile.ZipFile(archive) as zf:
            members = {info.filename: info for info in zf.infolist() if not info.is_dir()}
            missing = []
            for file in spec.sha256:
                info = members.get(f"{spec.folder}/{file}") or members.get(file)
                if info is None:
                    missing.append(file)
                    continue
                with zf.open(info) as src, (staged / file).open("wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise DatasetUnavailableError(
            f"{spec.name}: {origin} is not a readable zip archive ({exc}). {_no_network_hint(spec)}"
        ) from exc
    if missing:
        raise DatasetUnavailableError(
            f"{spec.name}: {origin} lacks {', '.join(sorted(missing))} (looked for "
            f"{spec.folder}/<file> and <file>). {_no_network_hint(spec)}"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(spec: DatasetSpec, folder: Path, *, fix: str) -> None:
    problems = []
    for file, expected in spec.sha256.items():
        path = folder / file
        if not path.is_file():
            problems.append(f"{path} is missing")
            continue
        actual = _sha256(path)
        if actual != expected:
            problems.append(f"{path} has sha256 {actual}, expected {expected}")
    if problems:
        raise DatasetUnavailableError(
            f"{spec.name} failed verification: {'; '.join(problems)}. Fix: {fix}"
        )


def _install(staged: Path, target: Path, scratch: Path) -> None:
    # Renames stay inside one directory, hence one filesystem, so each is atomic;
    # an existing folder is moved aside first because os.replace cannot replace a
    # non-empty directory.
    if target.exists():
        target.replace(scratch / "previous")
    try:
        os.replace(staged, target)
    except OSError:
        if target.is_dir():
            # Another process installed the dataset meanwhile; it is verified by
            # the next cache lookup.
            logger.info("%s appeared concurrently; keeping it", target)
            return
        raise
