"""timm's pretrained weights without network access: use the cache at once, or fail in seconds.

Asked for weights it cannot reach, huggingface_hub retries five times with back-off (about 50 s
measured here) and only then falls back to its cache or gives up. :func:`weights_reachable`
looks first: weights already cached are loaded in huggingface_hub's offline mode; weights
neither cached nor reachable within :data:`PROBE_TIMEOUT_S` are an error at once.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import timm

from ..errors import AttrtagError, first_line

_logger = logging.getLogger(__name__)

#: Seconds to wait for the weights' server to answer before calling it unreachable.
PROBE_TIMEOUT_S = 3.0
#: What timm's ``load_state_dict_from_hf`` downloads when a config names no file.
_HF_FILES = ("model.safetensors", "pytorch_model.bin")


@contextmanager
def weights_reachable(name: str) -> Iterator[None]:
    """Run ``timm.create_model(name, pretrained=True)`` inside this: it then never waits on a dead network.

    Raises:
        AttrtagError: the weights are not cached and their server does not answer.
    """
    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None)
    url = getattr(cfg, "url", None)
    if hub_id and importlib.util.find_spec("huggingface_hub") is not None:  # timm prefers the Hub then
        import huggingface_hub
        from huggingface_hub import constants

        if constants.is_offline_mode():  # the user said so: huggingface_hub reads its cache, fast
            yield
            return
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HF_FILES
        cached = any(isinstance(huggingface_hub.try_to_load_from_cache(hub_id, f), str) for f in files)
        reason = _unreachable(constants.ENDPOINT)
        if reason is None:
            yield
            return
        if not cached:
            raise _offline_error(name, f"{constants.ENDPOINT}/{hub_id}", reason)
        _logger.info("%s cannot be reached (%s); loading %s from the local cache", constants.ENDPOINT, reason, hub_id)
        saved = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = True  # what HF_HUB_OFFLINE=1 does, for this one load
        try:
            yield
        finally:
            constants.HF_HUB_OFFLINE = saved
    elif url:
        import torch.hub

        if not (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)).is_file():
            reason = _unreachable(url)
            if reason is not None:
                raise _offline_error(name, url, reason)
        yield
    else:
        yield  # timm has no source for this model; it says so itself


def _unreachable(url: str) -> str | None:
    """None when ``url``'s server answers within :data:`PROBE_TIMEOUT_S` (any HTTP status), else why not."""
    try:
        # urllib honours the https_proxy/no_proxy variables, as huggingface_hub does.
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=PROBE_TIMEOUT_S):
            return None
    except urllib.error.HTTPError:
        return None  # it answered
    except (OSError, ValueError) as err:  # URLError (DNS, refused), timeouts
        return first_line(getattr(err, "reason", err), 120)


def _offline_error(name: str, where: str, reason: str) -> AttrtagError:
    return AttrtagError(
        f"`pretrained`: timm's weights for '{name}' are not in the local cache and {where} cannot be reached "
        f"({reason}); pass a local weights file with `pretrained=PATH`, or train without `pretrained`"
    )
