"""Model backends for OpenAI and any OpenAI-compatible server.

* ``--model openai:NAME``: the Responses API (``POST {base_url}/responses``).
* ``--model openai-chat:NAME``: Chat Completions (``POST {base_url}/chat/completions``) for
  servers without ``/v1/responses`` (vLLM, Ollama, llama.cpp), converting both ways.

Settings: ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID``,
else a NeMo Gym ``env.yaml`` (``policy_api_key``, ``policy_base_url``).
"""

from __future__ import annotations

from gymcore import hookimpl


def _factory(mode: str):
    def factory(name, context):
        from gymcore.config import openai_settings
        from gymcore.errors import UsageError

        from .client import OpenAIBackend

        if not name:
            raise UsageError(f"--model {mode}: needs a model name, e.g. {mode}:gpt-4.1-mini")
        return OpenAIBackend(name, mode=mode, **openai_settings(), **(context.options or {}))

    return factory


@hookimpl
def register_models(register):
    register("openai", _factory("openai"), "OpenAI Responses API (or a compatible server at OPENAI_BASE_URL)")
    register("openai-chat", _factory("openai-chat"),
             "Chat Completions API, converted to and from Responses (vLLM, Ollama, llama.cpp)")
