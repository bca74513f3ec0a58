"""Model backends for OpenAI and any OpenAI-compatible server.

* ``--model openai:NAME``: the Responses API (``POST {base_url}/responses``).
* ``--model openai-chat:NAME``: Chat Completions (``POST {base_url}/chat/completions``) for
  servers without ``/v1/responses`` (vLLM, Ollama, llama.cpp), converting both ways.

Settings: ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID``,
else a NeMo Gym ``env.yaml`` (``policy_api_key``, ``policy_base_url``). A server that is not
on this machine needs a key: without one the backend is refused when it is created, before
any rollout, rather than by the server's 401 on every one.
"""

from __future__ import annotations

from gymcore import hookimpl


def _factory(mode: str):
    def factory(name, context):
        from gymcore.config import openai_settings
        from gymcore.errors import GymError, UsageError

        from .client import OpenAIBackend

        if not name:
            raise UsageError(f"--model {mode}: needs a model name, e.g. {mode}:gpt-4.1-mini")
        if getattr(context, "return_tokens", False) and mode != "openai-chat":
            raise UsageError(f"--return-tokens: the Responses API (--model {mode}:{name}) returns no token ids; "
                             f"serve the model with vLLM (>= 0.10.2) and use --model openai-chat:{name}")
        settings: dict = dict(openai_settings())
        if not settings["api_key"] and not is_local(settings["base_url"]):
            raise GymError(f"--model {mode}:{name}: no API key for {settings['base_url']}: set OPENAI_API_KEY, "
                           "or policy_api_key in ./env.yaml (a server that takes no key: OPENAI_API_KEY=none)")
        if context.timeout is not None:
            settings["timeout"] = context.timeout
        if getattr(context, "return_tokens", False):
            settings["return_tokens"] = True
        return OpenAIBackend(name, mode=mode, **{**settings, **(context.options or {})})

    return factory


def is_local(base_url: str) -> bool:
    """A server on this machine (``localhost``, 127.0.0.0/8, ``::1``): local servers usually
    take no key, so only a remote one without a key is refused before the run starts."""
    import ipaddress
    from urllib.parse import urlsplit

    host = urlsplit(base_url).hostname or ""
    if host.casefold() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@hookimpl
def register_models(register):
    register("openai", _factory("openai"), "OpenAI Responses API (or a compatible server at OPENAI_BASE_URL)")
    register("openai-chat", _factory("openai-chat"),
             "Chat Completions API, converted to and from Responses (vLLM, Ollama, llama.cpp)")
