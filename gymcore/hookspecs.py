"""The hooks a gymcore plugin can implement. These docstrings are the reference.

Two kinds of plugin exist, told apart by the entry-point group they are installed under:

* ``gym.resources``: a resource server (an *environment*). It offers tools and scores a
  finished rollout. The entry-point name is the environment's name (``--agent weather``).
* ``gym.models``: a model backend. It turns a Responses-API request into a response.

Any resource hook may be written ``def`` or ``async def``. gymcore awaits coroutines itself
(pluggy knows nothing of asyncio) and runs plain ``def`` implementations of ``call_tool``,
``setup_session``, ``verify`` and ``teardown_session`` in a worker thread of the
environment's own pool (as many threads as rollouts in flight, at most 256), so a blocking
tool never stalls the other rollouts, and one that never returns fails only its own rollout
(``--timeout``). Prefer ``async def`` for fast tools: it skips the thread hop.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("gym")


# --- resource servers -----------------------------------------------------------------


@hookspec
def list_tools():
    """Return the tools this plugin offers, as a list of Responses-API function tools.

    Each item is a dict ``{"type": "function", "name": ..., "description": ...,
    "parameters": <JSON schema>}`` (``"strict"`` optional). Called once when the
    environment is built; a tool name must be unique across the plugins of an environment,
    because tool calls are routed to the plugin that listed the name.
    """


@hookspec
def call_tool(name, arguments, session):
    """Run tool ``name`` with ``arguments`` (a dict parsed from the model's JSON) and return
    its output.

    Only the plugin that listed ``name`` is called. Return a ``str`` (sent to the model as
    is) or any JSON-serialisable value (sent JSON-encoded). Raising an exception does not
    end the rollout: the model receives an error output naming the exception and may go
    on. ``session`` is the rollout's :class:`gymcore.data.Session`: its ``state`` dict is
    yours to keep per-rollout state in.
    """


@hookspec
def setup_session(session):
    """Prepare per-rollout state before the first model call (optional).

    ``session.task`` is the input row (:class:`gymcore.data.Task`); store what you need
    in ``session.state``. The return value is ignored. Raising fails the rollout (class
    ``plugin:setup_session``) before any model call.
    """


@hookspec
def verify(session, response):
    """Score a finished rollout: return a :class:`gymcore.data.Verdict`, a dict
    ``{"reward": float, **metrics}``, a bare number, or ``None`` to abstain.

    ``response`` is the whole episode as a Responses-API response dict: ``output`` holds
    every item in order (messages, function calls, function call outputs, reasoning).
    ``session.task.verifier_metadata`` carries the row's ground truth, if the row has one.
    The reward is any finite number (negative and above 1 too); an optional
    ``reward_components`` key holds its named parts, a dict of finite numbers, written as the
    line's ``reward_components`` (NeMo RL reads it; its GDPO needs ``reward`` to be their
    sum, and the run warns once when it is not). A metric's name is a string other than the output
    line's own keys (``turns``, ``error``, ...); its value is what a JSON line holds as it
    is: ``None``, a bool, a string, an int within 64 bits, a finite float, or lists and
    string-keyed dicts of them. Anything else (a set, an object, ``2**70``, NaN, infinity,
    nesting past 250 levels) fails the rollout with class ``plugin:verify``, naming the
    metric and its type. A metric wins over an input column of the same name in the output
    line. When several plugins of one environment return a verdict, the rewards multiply
    (every check must pass) and the metrics merge. When none does, the reward is 1.0, as in NeMo Gym. Raising fails the
    rollout (class ``plugin:verify``): it goes to the failures file, never into the output
    as a reward; ``gym collect --resume`` runs it again once the verifier is fixed.
    """


@hookspec
def teardown_session(session):
    """Release per-rollout state after ``verify`` (optional). Called even if the rollout
    failed. The return value is ignored."""


@hookspec(firstresult=True)
def example_dataset():
    """Return the path of a JSONL file of example tasks for this environment (optional).

    ``gym collect --agent NAME`` reads it when ``--input`` is not given.
    """


@hookspec(firstresult=True)
def example_rollouts():
    """Return the path of a JSONL file of recorded rollouts for this environment (optional).

    The ``replay`` model backend replays the model turns in it, so the environment runs
    offline, for demos and tests, while its tools and ``verify`` run for real.
    """


@hookspec
def register_datasets(register):
    """Offer task generators by calling ``register(name, generate, description)`` (optional).

    ``gym datasets`` lists them as ``ENV:NAME``, where ``ENV`` is this environment's name;
    ``gym dataset make ENV:NAME --size N --seed S -o tasks.jsonl [KEY=VALUE ...]`` calls
    ``generate(size=N, seed=S, **options)``, each ``KEY=VALUE`` becoming an option (values
    parsed as YAML scalars: ``difficulty=3``, ``min_animals=2``). ``generate`` returns an
    iterable of task rows, each a dict shaped as an input JSONL line (with the ground truth
    ``verify`` needs in ``verifier_metadata``); gymcore validates and writes them. The same
    ``size``, ``seed`` and options must give the same rows, so a dataset is reproducible
    from its command line. Raise ``ValueError`` (or ``TypeError`` for an unknown option)
    with a message for the user when the options are wrong. Called only by the dataset
    commands, so a generator may import heavy libraries inside ``generate``.
    """


# --- model backends --------------------------------------------------------------------


@hookspec
def register_models(register):
    """Register model backends by calling ``register(prefix, factory, description)``.

    ``gym collect --model PREFIX:NAME`` picks the backend whose prefix matches and calls
    ``factory(name, context)``, where ``name`` is the text after the colon (may be empty)
    and ``context`` is a :class:`gymcore.backends.ModelContext` (the environment, for
    backends that need its data; ``timeout``, the seconds one call may take, from
    ``--model-timeout``; ``return_tokens``, from ``--return-tokens``: put the call's
    ``prompt_token_ids``, ``generation_token_ids`` and ``generation_log_probs`` on the last
    output item of every reply, or raise ``GymError`` from the factory if the backend
    cannot; see ``gymcore.tokens``). The factory returns an object with

    * ``async def create_response(self, request: dict) -> dict``: take a Responses-API
      request body (``model``, ``input``, ``tools``, sampling parameters) and return a
      Responses-API response body (``id``, ``output``, ``status``, ``usage``);
      raise :class:`gymcore.backends.ModelError` on failure (``kind="connection"`` when the
      server cannot be reached, ``kind="timeout"`` past ``context.timeout``: both are
      retried, and a run none of whose calls has succeeded stops at once on them), or
      return the body the server sent: one whose ``status`` is ``failed`` or
      ``cancelled``, or that carries an ``error``, is a model failure too
      (``model:failed`` / ``model:cancelled``, retried like a 5xx, never scored; see
      ``gymcore.replies``);
    * ``async def aclose(self)``: release connections;
    * a ``label`` attribute: the name written into each rollout's ``model`` field.
    """
