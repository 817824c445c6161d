"""Find hub weights in the local cache, or download them; fail in seconds, with one clear line, offline."""
from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Callable, TypeVar
from urllib.parse import urlparse

from ..errors import ModelLoadError

log = logging.getLogger(__name__)
T = TypeVar("T")

HF_FILENAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def host_reachable(host: str, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def hub_host() -> str:
    return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"


def cached_hf_file(repo_id: str, filenames: tuple[str, ...]) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        found = try_to_load_from_cache(repo_id, name)
        if isinstance(found, str) and Path(found).is_file():
            return found
    return None


def open_clip_weights(open_clip, arch: str, tag: str, hint: str) -> tuple[str, dict]:
    """Local file of an open_clip pretrained tag (downloading it when online) and its preprocessing config."""
    from open_clip.pretrained import download_pretrained

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    spec = f"{arch}:{tag}"
    if cfg.get("hf_hub"):
        repo_id, filename = (os.path.split(cfg["hf_hub"]) if not cfg["hf_hub"].endswith("/")
                             else (cfg["hf_hub"][:-1], ""))
        names = (filename,) if filename else HF_FILENAMES
        if filename.endswith((".bin", ".pth")):
            names = (filename[:-4] + ".safetensors", filename)
        cached = cached_hf_file(repo_id, names)
        host = hub_host()
    else:
        url = cfg.get("url", "")
        target = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(urlparse(url).path)
        cached = str(target) if target.is_file() else None
        host = urlparse(url).hostname or ""
    if cached:
        return cached, cfg
    if not host_reachable(host):
        raise ModelLoadError(spec, f"weights are not in the local cache and {host} cannot be reached; {hint}")
    log.info("downloading %s from %s", spec, host)
    try:
        return download_pretrained(cfg), cfg
    except Exception as exc:
        raise ModelLoadError(spec, f"download from {host} failed ({str(exc).splitlines()[0][:160]}); {hint}") from exc


def from_hub(spec: str, repo: str, load: Callable[[bool], T], hint: str) -> T:
    """``load(local_files_only)`` a transformers checkpoint of hub repository ``repo``: from the local cache
    first; the network only when the hub answers a quick probe, so offline the failure comes in seconds, as
    one ModelLoadError ending in ``hint`` (how to point at a local copy)."""
    try:
        return load(True)
    except OSError:
        pass
    except Exception as error:
        raise ModelLoadError(spec, f"cached copy is unusable ({one_line(error)}); {hint}") from None
    if hub_offline():
        raise ModelLoadError(spec, f"not in the local Hugging Face cache and HF_HUB_OFFLINE is set; {hint}")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        HfApi().model_info(repo, timeout=5)
    except RepositoryNotFoundError:
        raise ModelLoadError(spec, f"no model '{repo}' on the Hugging Face hub (or it is private); {hint}") from None
    except Exception as error:
        raise ModelLoadError(
            spec, f"not in the local cache and the Hugging Face hub is unreachable ({one_line(error)}); {hint}"
        ) from None
    log.info("downloading %s from the Hugging Face hub", repo)
    try:
        return load(False)
    except Exception as error:
        raise ModelLoadError(spec, f"download failed ({one_line(error)}); {hint}") from None


def hub_offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return constants.HF_HUB_OFFLINE or flag in {"1", "true", "yes", "on"}


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:200]
