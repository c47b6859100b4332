"""Where a checkpoint comes from: a local folder, the bundled pair, or an ``org/name`` id on the model hub.

Every place that names a model (``from_pretrained``, ``kronos-forecast --model``, ``kronos-train --from``,
``KRONOS_MODEL_PATH``, ``KRONOS_MODELS``, ``kronos-fetch``) resolves it here, to a local folder in our
layout (``config.json`` + ``model.safetensors``) and, for a hub id, the commit it came from.

- A string naming an existing folder is that folder; ``bundled`` is the shipped kronos-demo pair.
- Anything else shaped like ``org/name`` is fetched with ``huggingface_hub`` (its cache, ``HF_HOME``,
  ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and ``HF_TOKEN`` behave as its users expect). Only the two files
  above are fetched, never a pickle. ``revision`` pins a commit, branch or tag; offline, a cached copy
  of that revision is used.
- Every failure is a ``CheckpointError`` that names the id and says what to do.

``OFFICIAL_MODELS`` is the one table of the published checkpoints: which tokenizer each predictor was
trained with and the context it was trained for. It is used only when a caller names no tokenizer (or
no context); naming one overrides it (``tokenizer=``, ``--tokenizer``, ``KRONOS_TOKENIZER_PATH``,
``--max-context``, ``KRONOS_MAX_CONTEXT``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError
from .bundled import bundled_model_path

# The two files of a checkpoint folder (model/checkpoints/checkpoint.py reads them; named here too so that this
# module, which settings validation imports, does not load torch).
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

BUNDLED = "bundled"
# The hub's repo id rule: an owner and a name of letters, digits, '-', '_' and '.'.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
DEFAULT_CONTEXT = 512


@dataclass(frozen=True)
class OfficialModel:
    tokenizer: str
    max_context: int


# The published Kronos predictors, their tokenizers and trained context lengths (upstream's model zoo).
OFFICIAL_MODELS: dict[str, OfficialModel] = {
    "NeoQuasar/Kronos-mini": OfficialModel("NeoQuasar/Kronos-Tokenizer-2k", 2048),
    "NeoQuasar/Kronos-small": OfficialModel("NeoQuasar/Kronos-Tokenizer-base", 512),
    "NeoQuasar/Kronos-base": OfficialModel("NeoQuasar/Kronos-Tokenizer-base", 512),
}


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint resolved to a local folder; ``revision`` is the hub commit (None for a local folder)."""

    source: str
    folder: Path
    revision: str | None = None

    @property
    def from_hub(self) -> bool:
        return self.revision is not None


def is_hub_id(source: str | os.PathLike) -> bool:
    """An ``org/name`` string that does not name an existing local path."""
    text = os.fspath(source)
    return isinstance(text, str) and bool(_HUB_ID.match(text)) and not Path(text).expanduser().exists()


def official_model(source: str | os.PathLike) -> OfficialModel | None:
    """The table entry of an official predictor id (hub ids are matched without regard to case)."""
    text = os.fspath(source).lower()
    return next((entry for name, entry in OFFICIAL_MODELS.items() if name.lower() == text), None)


def default_tokenizer(source: str | os.PathLike, folder: Path | None = None) -> str:
    """The tokenizer that goes with a predictor when none is named: ``<folder>/tokenizer`` when the
    folder has one, else the official pairing. CheckpointError when neither applies."""
    text = os.fspath(source)
    if text == BUNDLED:
        return str(bundled_model_path() / "tokenizer")
    local = folder if folder is not None else (None if is_hub_id(text) else Path(text).expanduser())
    if local is not None and (local / "tokenizer").is_dir():
        return str(local / "tokenizer")
    official = official_model(text)
    if official is not None:
        return official.tokenizer
    where = f"{local / 'tokenizer'} does not exist" if local is not None else "it is not an official Kronos model"
    raise CheckpointError(
        f"{text}: no tokenizer given and none known ({where}); name one (tokenizer=, --tokenizer, "
        f"KRONOS_TOKENIZER_PATH), e.g. {OFFICIAL_MODELS['NeoQuasar/Kronos-small'].tokenizer}"
    )


def default_context(source: str | os.PathLike) -> int:
    """The context length a predictor was trained for: the official table's, else 512."""
    official = official_model(source)
    return official.max_context if official is not None else DEFAULT_CONTEXT


def resolve_checkpoint(source: str | os.PathLike, revision: str | None = None) -> Checkpoint:
    """A local folder for ``source`` (a folder, ``bundled`` or a hub id), downloading it if need be."""
    text = os.fspath(source)
    if text == BUNDLED:
        text = str(bundled_model_path())
    if not is_hub_id(text):
        folder = Path(text).expanduser()
        if revision:
            raise CheckpointError(f"{text}: a revision ({revision!r}) pins a hub id, not a local folder")
        if not folder.exists():
            raise CheckpointError(
                f"checkpoint folder {folder} does not exist (and {text!r} is not a hub id of the form org/name)"
            )
        return Checkpoint(text, folder)
    return _download(text, revision)


def _hub_settings() -> tuple[str, str, bool]:
    from huggingface_hub import constants

    return constants.ENDPOINT, constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE


class HubOffline(CheckpointError):
    """HF_HUB_OFFLINE=1 forbids downloading and a file is not in the model cache."""


class HubUnreachable(CheckpointError):
    """The hub's endpoint (or the proxy to it) cannot be reached and a file is not in the model cache."""

    def __init__(self, message: str, endpoint: str, reason: str) -> None:
        super().__init__(message)
        self.endpoint, self.reason = endpoint, reason


def unreachable(endpoint: str, timeout_s: float = 3.0) -> str | None:
    """Why ``endpoint`` cannot be reached (no such host, refused, no route, timed out), else None.

    One TCP connection to its host (or to the proxy ``urllib`` would use), before downloading, so
    that a host without network fails at once instead of after huggingface_hub's retries (about 26 s
    when the name does not resolve). Cached files are then read from the cache."""
    import socket
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    url = urlsplit(endpoint)
    if not url.hostname:
        return None
    proxy = None if proxy_bypass(url.hostname) else getproxies().get(url.scheme)
    target = urlsplit(proxy) if proxy else url
    host, port = target.hostname, target.port or (443 if target.scheme == "https" else 80)
    if not host:
        return None
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as exc:
        via = f" (the proxy {proxy})" if proxy else ""
        return f"{host}:{port}{via}: {exc.strerror or exc}"


def _download(repo_id: str, revision: str | None) -> Checkpoint:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint, cache, offline = _hub_settings()
    at = f" at revision {revision!r}" if revision else ""
    reason = None if offline else unreachable(endpoint)  # no network: the cache only, at once
    paths = {}
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        try:
            paths[name] = Path(hf_hub_download(repo_id, name, revision=revision, local_files_only=reason is not None))
        except RepositoryNotFoundError:
            raise CheckpointError(
                f"{repo_id}: no such model repository on {endpoint} (or it is private or gated: set HF_TOKEN to a "
                "token that may read it), nor a local folder; check the id, e.g. NeoQuasar/Kronos-small"
            ) from None
        except RevisionNotFoundError:
            raise CheckpointError(
                f"{repo_id}: revision {revision!r} does not exist on {endpoint}; give a commit hash, branch or tag "
                "of that repository (revision=, KRONOS_MODEL_REVISION, KRONOS_TOKENIZER_REVISION)"
            ) from None
        except RemoteEntryNotFoundError:
            raise CheckpointError(
                f"{repo_id}{at}: the repository has no {name}; a Kronos checkpoint needs {CONFIG_FILE} and "
                f"{WEIGHTS_FILE} (pickled weights are never loaded): pick another repository or revision"
            ) from None
        except LocalEntryNotFoundError:
            if reason is not None:
                raise HubUnreachable(
                    f"{repo_id}{at}: cannot reach {endpoint} ({reason}) and {name} is not in the model cache "
                    f"({cache}); check the network, proxy or HF_ENDPOINT, or fetch the model elsewhere "
                    f"(`kronos-fetch {repo_id} --out DIR`) and give that folder",
                    endpoint,
                    reason,
                ) from None
            if offline:
                raise HubOffline(
                    f"{repo_id}{at}: {name} is not in the model cache ({cache}) and HF_HUB_OFFLINE=1 forbids "
                    f"downloading; fetch it once online with the same HF_HOME, or copy a folder made by "
                    f"`kronos-fetch {repo_id} --out DIR` and give that folder"
                ) from None
            raise CheckpointError(
                f"{repo_id}{at}: cannot reach {endpoint} and {name} is not in the model cache ({cache}); check the "
                f"network, proxy or HF_ENDPOINT, or fetch the model elsewhere (`kronos-fetch {repo_id} --out DIR`) "
                "and give that folder"
            ) from None
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "an error"
            raise CheckpointError(
                f"{repo_id}{at}: {endpoint} answered {status} for {name}; try again later, or give a local folder"
            ) from None
        except OSError as exc:  # the cache folder: permissions, a full disk
            raise CheckpointError(f"{repo_id}: cannot store {name} in the model cache ({cache}): {exc}") from None
    folder = paths[WEIGHTS_FILE].parent
    if paths[CONFIG_FILE].parent != folder:  # the branch moved between the two downloads
        raise CheckpointError(f"{repo_id}{at}: the revision changed while downloading; try again")
    # The cache keeps each commit in snapshots/<commit>/.
    commit = folder.name if _COMMIT.match(folder.name) else (revision or "unknown")
    return Checkpoint(repo_id, folder, commit)


@dataclass(frozen=True)
class PairSources:
    """The predictor and tokenizer checkpoints of one model, resolved, and the context to serve it with."""

    model: Checkpoint
    tokenizer: Checkpoint
    max_context: int


def resolve_pair(
    model: str | os.PathLike,
    revision: str | None = None,
    tokenizer: str | os.PathLike | None = None,
    tokenizer_revision: str | None = None,
    max_context: int | None = None,
) -> PairSources:
    """Resolve a predictor and its tokenizer (default: ``default_tokenizer``) and the context length
    (default: ``default_context``)."""
    predictor = resolve_checkpoint(model, revision)
    tokenizer_source = tokenizer if tokenizer is not None else default_tokenizer(model, _local(predictor))
    paired = resolve_checkpoint(tokenizer_source, tokenizer_revision)
    return PairSources(predictor, paired, max_context if max_context is not None else default_context(model))


def _local(checkpoint: Checkpoint) -> Path | None:
    return None if checkpoint.from_hub else checkpoint.folder
