"""Where built fixtures live: one cache folder, and atomic "build once" folders inside it.

root = default_cache_dir()                 # $MEMPO_CACHE_DIR or ~/.cache/mempo_verl
path = build_once(root / "name-<hash>", lambda folder: write_files_into(folder))
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$MEMPO_CACHE_DIR``, else ``~/.cache/mempo_verl``."""
    return Path(os.environ.get("MEMPO_CACHE_DIR", Path.home() / ".cache" / "mempo_verl"))


def build_once(target: Path, build: Callable[[Path], object], marker: str = "config.json") -> Path:
    """``target``, built by ``build(folder)`` unless it already holds ``marker``.

    ``build`` writes into a temporary sibling that is renamed into place, so concurrent callers (pytest workers, Ray
    actors) never see a half-written folder: a folder that exists is complete.
    """
    if (target / marker).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("building %s", target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(staging)
        try:
            staging.rename(target)
        except OSError:  # another process won the race; its folder is complete
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
