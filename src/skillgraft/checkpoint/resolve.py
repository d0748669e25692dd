"""Where a model named on the command line lives: a local folder, a Hugging Face id, or a
model the project ships.

- A path that exists is used as it is.
- `org/name` or `org/name@revision` (the seeds name models this way) resolves through
  `huggingface_hub` from the local Hub cache (`HF_HOME` / `HF_HUB_CACHE`): a snapshot already
  there is used without touching the network; otherwise it is downloaded (weights as
  safetensors, configs, tokenizer files) when the network is allowed. `--offline` or
  `HF_HUB_OFFLINE=1` never touches the network. The resolved commit hash is recorded in
  every manifest, so an output names exactly which weights it came from.
- `lab:NAME` is one of the lab world's shipped checkpoints (`lab:base`, `lab:cp`, ...), so
  the recipes in `recipes/` run as shipped on any install; `lab:smollm2` is the real model
  `skillgraft lab fetch` (or `lab real`) converted into the cache.

`huggingface_hub` is imported only when an id is given: the graft core starts without it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from skillgraft.errors import UserError

SHIPPED = Path(__file__).resolve().parents[1] / "lab" / "shipped"
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.\-]*/[\w.\-]+)(?:@(?P<revision>[\w.\-/]+))?$")
# What a graft, an evaluation or a training run reads from a model repository.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer.model", "*.tiktoken", "*.txt", "README.md"]
CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference made local: the folder, and for Hub ids where it came from."""

    path: Path
    spec: str
    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None

    def record(self) -> dict:
        """What a manifest says about the source (nothing extra for plain folders)."""
        if self.repo_id is None:
            return {}
        return {"hub": {"repo_id": self.repo_id, "revision": self.revision or "main", "commit": self.commit}}


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def is_hub_id(spec: str) -> bool:
    return bool(_HUB_ID.match(spec)) and not spec.startswith((".", "/", "~"))


def resolve_model(spec: str | Path, role: str = "model") -> ResolvedModel:
    """The local folder for `spec` (see the module doc); one UserError when there is none."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.exists():
        return ResolvedModel(path, text)
    if text.startswith("lab:"):
        from skillgraft.lab.real import model as real

        if text == real.NAME:   # the real model `lab fetch` converts, from the cache (never downloaded here)
            return ResolvedModel(real.cached_model(text), text)
        folder = SHIPPED / text[4:]
        if not text[4:] or not (folder / "config.json").is_file():
            names = sorted(p.name for p in SHIPPED.iterdir() if (p / "config.json").is_file())
            raise UserError(f"{role} {text}: the lab ships {', '.join('lab:' + n for n in names)} "
                            "(and lab:smollm2, fetched once with `skillgraft lab fetch`)")
        return ResolvedModel(folder, text)
    match = _HUB_ID.match(text)
    if match is None or text.startswith((".", "/", "~")) or isinstance(spec, Path):
        raise UserError(f"{role} {text} does not exist")
    return _from_hub(text, match["repo"], match["revision"], role)


def _from_hub(spec: str, repo_id: str, revision: str | None, role: str) -> ResolvedModel:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HFValidationError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    fetch = f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")
    try:  # the cache first: a snapshot that is there is used without any network traffic
        folder = snapshot_download(repo_id, revision=revision, cache_dir=_cache_dir(), local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError):
        folder = None
    except HFValidationError as exc:
        raise UserError(f"{role} {spec}: not a valid Hugging Face id ({exc})") from None
    gaps = snapshot_gaps(Path(folder)) if folder is not None else []
    if gaps and offline():
        raise UserError(f"{role} {spec}: the cached snapshot {folder} is incomplete (no {'; no '.join(gaps)}) and the "
                        f"network is off (--offline / HF_HUB_OFFLINE=1); fetch it whole with `{fetch}`")
    if folder is None or gaps:  # not cached, or cached in part (huggingface_hub does not check): fetch the rest
        if offline():
            raise UserError(f"{role} {spec} is not in the Hugging Face cache ({_cache_dir()}) and the network is "
                            f"off (--offline / HF_HUB_OFFLINE=1); fetch it with `{fetch}` or pass a local folder")
        try:
            folder = snapshot_download(repo_id, revision=revision, cache_dir=_cache_dir(), allow_patterns=HUB_PATTERNS,
                                       etag_timeout=CONNECT_TIMEOUT)
        except (RepositoryNotFoundError, GatedRepoError) as exc:
            raise UserError(f"{role} {spec}: the Hub refused it ({type(exc).__name__}: the id is wrong, private "
                            "or gated; log in with `hf auth login` if you have access)") from None
        except RevisionNotFoundError:
            raise UserError(f"{role} {spec}: the Hub has no revision {revision!r} for {repo_id}") from None
        except Exception as exc:
            if not isinstance(exc, (LocalEntryNotFoundError, OSError)) and not _network_error(exc):
                raise
            where = (f"is only partly in the Hugging Face cache (no {'; no '.join(gaps)})" if gaps else
                     f"is neither a local folder nor in the Hugging Face cache ({_cache_dir()})")
            raise UserError(f"{role} {spec} {where}, and the Hub cannot be reached ({_first_line(exc)}); "
                            f"fetch it with `{fetch}` where there is network, or pass a local folder") from None
    folder = Path(folder)
    gaps = snapshot_gaps(folder)
    if gaps:
        raise UserError(f"{role} {spec}: the snapshot {folder} is incomplete (no {'; no '.join(gaps)}); fetch it "
                        f"whole with `{fetch}` (skillgraft reads safetensors weights only)")
    return ResolvedModel(folder, spec, repo_id, revision, folder.name)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def snapshot_gaps(folder: Path) -> list[str]:
    """What a Hub snapshot lacks to be read as a model (config, every weight file its index
    lists, a tokenizer) or as a PEFT adapter (adapter config and weights); [] when whole.

    huggingface_hub returns a cached snapshot whatever it holds, so one fetched in part (only
    the configs, an interrupted download, a blob deleted by a cache cleanup) is caught here
    instead of failing later with "no model.safetensors" or grafting without vocabulary
    alignment because the tokenizer is missing."""
    def present(name: str) -> bool:
        return (folder / name).is_file()  # False for a link to a missing blob

    if present("adapter_config.json"):
        return [] if present("adapter_model.safetensors") else ["adapter_model.safetensors"]
    gaps = [] if present("config.json") else ["config.json"]
    index = folder / "model.safetensors.index.json"
    if present(index.name):
        try:
            shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        except (OSError, ValueError):
            shards = []
            gaps.append(f"readable {index.name}")
        gaps += [shard for shard in shards if not present(shard)]
    elif not any(p.name.endswith(".safetensors") and p.is_file() for p in folder.iterdir()):
        gaps.append("safetensors weights (model.safetensors or a sharded index)")
    if not any(present(name) for name in TOKENIZER_FILES) and not any(folder.glob("*.tiktoken")):
        gaps.append("tokenizer (tokenizer.json, tokenizer.model or vocab.json)")
    return gaps


def _cache_dir() -> str:
    """The Hub cache as the environment says now (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return os.path.expanduser(os.path.join(home, "hub"))


# Where huggingface_hub's HTTP client (httpx, httpx2 in newer releases, requests in older)
# raises a transport error that is not an OSError: a reset connection, a broken response.
_HTTP_CLIENTS = {"httpx", "httpx2", "httpcore", "httpcore2", "requests", "urllib3", "h11"}


def _network_error(exc: BaseException) -> bool:
    return any(cls.__module__.split(".")[0] in _HTTP_CLIENTS for cls in type(exc).__mro__)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    got = re.search(r"Got: (.*)", text)
    return (got.group(1) if got else text.splitlines()[0] if text else type(exc).__name__)[:160]
