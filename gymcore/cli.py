"""The ``gym`` command. Each subcommand is small; heavy imports happen inside them, so
``gym --help`` and ``gym plugins list`` stay instant."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from . import __version__
from .errors import GymError, UsageError


def exits_130_on_signals(command):
    """:func:`gymcore.stopping.exits_130_on_signals`, imported when the command runs (so
    ``gym --help`` does not import asyncio)."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from .stopping import exits_130_on_signals as wrap

        return wrap(command)(*args, **kwargs)
    return wrapper


def _fail(exc: Exception) -> "click.ClickException":
    """A usage error exits 2, as click's own do; any other error 1."""
    if isinstance(exc, UsageError):
        return click.UsageError(str(exc))
    return click.ClickException(str(exc))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gym")
def cli():
    """Collect scored agent rollouts: the training data of RL for LLM agents.

    \b
    Offline demo (no API key; the model turns are a REPLAY of recorded ones):
      gym collect --agent weather --model replay --output results/weather.jsonl
    With a real model:
      OPENAI_API_KEY=... gym collect --agent weather --model openai:gpt-4.1-mini \\
          --output results/weather-openai.jsonl --limit 5 --num-repeats 2 --parallel 3
    """


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--agent", "-a", help="Environment to run, e.g. weather (compose with a,b): the default of rows "
              "without an agent_ref (a row's agent_ref.name picks its own); optional when every row has one.")
@click.option("--input", "-i", "input_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Input JSONL of tasks. Default: the environment's bundled example dataset. "
              "'-' (standard input), /dev/stdin, a FIFO or <(...) is copied once to OUTPUT's .input.jsonl, "
              "which the run reads and --resume reads again (not standard input).")
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False),
              help="Output JSONL, one scored rollout per line (required).")
@click.option("--model", "-m", help="BACKEND:MODEL, e.g. openai:gpt-4.1-mini, openai-chat:NAME "
              "(Chat Completions servers), or replay (recorded turns, offline). Default: $GYM_MODEL, "
              "else openai:<policy_model_name> from ./env.yaml.")
@click.option("--limit", type=int, help="Use only the first N rows of the input. Default: all.")
@click.option("--num-repeats", "-n", type=int, help="Rollouts per task (for pass@k, GRPO groups). Default: 1.")
@click.option("--parallel", "-p", metavar="N|auto", help="Rollouts in flight at once; 0 = all; 'auto' = start low, "
              "grow while model calls succeed and their latency holds, cut back on 429/5xx and Retry-After "
              "(not with --server). Default: 16.")
@click.option("--parallel-max", type=click.IntRange(min=1), help="The most rollouts in flight --parallel auto "
              "goes to. Default: 256.")
@click.option("--temperature", type=float, help="Override responses_create_params.temperature.")
@click.option("--top-p", type=float, help="Override responses_create_params.top_p.")
@click.option("--max-output-tokens", type=int, help="Override responses_create_params.max_output_tokens.")
@click.option("--set", "set_items", multiple=True, metavar="responses_create_params.KEY=VALUE",
              help="Override any request parameter (repeatable); a dotted KEY sets a key inside an object "
              "(reasoning.effort=high), merged with the row's own; VALUE is parsed as JSON if it can be, "
              "else taken as text.")
@click.option("--max-steps", type=int, help="Stop a rollout after this many model calls. Default: 16.")
@click.option("--resume", is_flag=True, help="Continue the run in OUTPUT: skip rollouts already there, retry "
              "failed ones; refused if the input file, agent, model, overrides or max steps changed. "
              "May raise --limit or --num-repeats to extend a finished run.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUTPUT and its sidecars (without it, "
              "an existing OUTPUT is never touched).")
@click.option("--skip-invalid", is_flag=True, help="Go on without invalid input rows (counted and reported). "
              "Default: list them and stop before any rollout starts. Either way a row's task_index is "
              "its position among the non-empty lines, so it never shifts.")
@click.option("--max-failures", metavar="N|FRACTION", help="Stop early once more than N rollouts failed, or "
              "more than FRACTION (e.g. 0.1) of the rollouts to run. Default: never.")
@click.option("--max-retries", type=click.IntRange(min=0), help="Retries of a model call that failed with "
              "408/409/429/5xx or a lost connection, with exponential backoff and jitter, honouring "
              "Retry-After. Default: 5.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Bound each rollout as a whole (model, tools, verify); a rollout that takes longer "
              "fails with class 'timeout'. Default: none.")
@click.option("--model-timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Bound each model call, per attempt: a call with no answer by then is a timeout, retried like "
              "a lost connection (--max-retries), then a failure of class 'model:timeout'. Lower it when replies "
              "are short, so that a hung model server fails fast. With --server, give it to `gym serve` instead. "
              "Default: 600.")
@click.option("--judge-model", metavar="BACKEND:NAME", help="A model verify may call to judge answers "
              "(session.judge), e.g. openai:gpt-4.1-mini; same retries as the policy, its tokens counted apart, "
              "and a judge that fails is a failure of class 'judge:...', never a reward. With --server, give it "
              "to `gym serve` instead. Default: none.")
@click.option("--grace", type=click.FloatRange(min=0), metavar="SECONDS", help="After Ctrl-C or SIGTERM, how "
              "long rollouts in flight may take to finish before they are cancelled. Default: 30.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--server", "servers", multiple=True, metavar="URL",
              help="Run rollouts on `gym serve` runners instead of in-process (repeatable: spread over "
              "all). --model is then optional (the runners' model; if given it must match).")
@click.option("--token", envvar="GYM_TOKEN", help="Bearer token of the --server runners. Default: $GYM_TOKEN.")
@click.option("--return-tokens", is_flag=True, help="Record each model call's exact token ids and logprobs "
              "(prompt_token_ids, generation_token_ids, generation_log_probs on its last output item) and "
              "token_monotonic per rollout, for RL trainers; --model openai-chat: against vLLM >= 0.10.2. "
              "A call that comes back without them fails as 'model:no_tokens'. With --server, give it to `gym serve` instead. See docs/training.md.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: start --workers `gym serve` runners as Ray actors over a cluster and collect through "
              "them (pip install 'gymcore[ray]'; see docs/ray.md).")
@click.option("--ray-address", metavar="auto|HOST:PORT", help="Ray cluster to join (--executor ray). "
              "Default: $RAY_ADDRESS, else a Ray started on this machine for the run.")
@click.option("--workers", type=click.IntRange(min=1), help="Runners to start (--executor ray). "
              "Default: one per alive node.")
@click.option("--one-per-node", is_flag=True, help="At most one runner per node (--executor ray; "
              "STRICT_SPREAD). Default: spread as far as fits.")
@click.option("--model-url", "model_urls", multiple=True, metavar="URL", help="Base URL of one replica of the model, for OpenAI-compatible backends (repeatable: a rollout "
              "stays on one replica, the least loaded when it starts; one that refuses connections is passed "
              "over for a while). Default: $OPENAI_BASE_URL (several: comma-separated).")
@click.option("--server-timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="How long one rollout may wait for its --server runner's answer; past it the rollout "
              "fails with class 'server:timeout' (a frozen runner ends in failures, not a hung run). "
              "Default: 1800.")
@click.option("--pass-threshold", type=float, default=1.0, show_default=True,
              help="A rollout passes (pass@k, the summary, NeMo Gym's aggregate metrics) when its reward is at "
              "least this; rewards may be any finite number.")
@click.option("--seed-repeats", is_flag=True, help="Put seed = rollout_index into each request (NeMo Gym's "
              "num_repeats_add_seed), so a repeat is reproducible on a server that honours it (vLLM).")
@click.option("--no-nemo-gym-files", is_flag=True, help="Do not write NeMo Gym's OUTPUT_materialized_inputs.jsonl "
              "and OUTPUT_aggregate_metrics.json beside the output.")
@click.option("--estimate", type=click.IntRange(min=1), metavar="N", help="Run a pilot of N rollouts spread over "
              "the tasks (the start of the run: written, and --resume continues from them), then project the "
              "whole run (wall time at this --parallel, model calls, tokens, failure rate, cost) with 95% "
              "intervals, print the command that continues, and stop.")
@click.option("--price-in", type=click.FloatRange(min=0), metavar="USD", help="With --estimate: price per "
              "million input tokens, for the projected cost (no built-in prices).")
@click.option("--price-out", type=click.FloatRange(min=0), metavar="USD", help="With --estimate: price per "
              "million output tokens.")
@click.pass_context
@exits_130_on_signals
def collect(ctx, agent, input_path, output, model, limit, num_repeats, parallel, parallel_max, temperature, top_p,
            max_output_tokens, set_items, max_steps, resume, overwrite, skip_invalid, max_failures,
            max_retries, timeout, model_timeout, judge_model, grace, quiet, servers, token, return_tokens,
            executor, ray_address, workers, one_per_node, model_urls, server_timeout, pass_threshold,
            seed_repeats, no_nemo_gym_files, estimate, price_in, price_out):
    """Run every task of an input JSONL through an agent and write scored rollouts.

    The seed tutorial's spelling works too, after the command name:

    \b
      gym collect +agent_name=weather +output_jsonl_fpath=out.jsonl \\
          +limit=5 +num_repeats=2 +num_samples_in_parallel=3 \\
          +responses_create_params.temperature=0.7

    Writes OUTPUT (a line per scored rollout, written as each finishes) and, beside it
    (for OUTPUT results/run.jsonl): results/run.failures.jsonl (rollouts that failed for
    infrastructure reasons: the model endpoint after retries, --timeout, a plugin
    exception; never in OUTPUT as a reward), results/run.run.json (what the run is, for
    --resume) and results/run.metrics.json (mean reward, pass@k, tokens, failures by class).

    The openai and openai-chat backends read OPENAI_API_KEY and OPENAI_BASE_URL
    (default https://api.openai.com/v1), else policy_api_key and policy_base_url
    from a NeMo Gym env.yaml in the working directory (whose policy_model_name is
    the default model). A server not on this machine needs a key: without one the
    run is refused before it starts.

    An existing OUTPUT is never overwritten: continue it with --resume (after a crash,
    Ctrl-C, or to retry its failures) or replace it with --overwrite. The first Ctrl-C
    finishes the rollouts in flight and prints the command that resumes; a second one
    stops at once.

    \b
    Exit status: 0 every rollout scored; 1 an error, some rollouts failed,
    or the run stopped early (--max-failures, rejected credentials,
    a model server never reached);
    2 a usage error (the command line is wrong; nothing was started);
    0 after an --estimate pilot (continue it with --resume);
    130 after Ctrl-C or SIGTERM, at whatever point they came (resume it).
    """
    import asyncio

    from .agent import DEFAULT_MAX_STEPS, AgentConfig
    from .backends import DEFAULT_MODEL_TIMEOUT
    from .retry import DEFAULT_MAX_RETRIES, RetryPolicy
    from .stopping import DEFAULT_GRACE, ProcessSignals
    from .collector import (AUTO, DEFAULT_PARALLEL, DEFAULT_PARALLEL_MAX, CollectConfig, collect as run_collect,
                            metrics_path)
    from .config import default_model, merge_params, parse_set_options, parse_seed_args
    from .metrics import format_summary
    from .plugins import load_plugins

    try:
        seed, overrides = parse_seed_args(ctx.args)
        overrides = merge_params(overrides, parse_set_options(set_items))
    except GymError as exc:
        raise _fail(exc)
    given = {"agent": agent, "input": input_path, "output": output, "model": model, "limit": limit,
             "num_repeats": num_repeats, "parallel": parallel, "max_steps": max_steps}
    for key, value in seed.items():
        if given.get(key) is None:
            given[key] = Path(value) if key in ("input", "output") else value
    for key, value in (("temperature", temperature), ("top_p", top_p), ("max_output_tokens", max_output_tokens)):
        if value is not None:
            overrides[key] = value
    if not given["agent"] and not given["input"]:
        raise click.UsageError("missing --agent (or +agent_name=...), or an --input whose rows name their "
                               "environments in agent_ref; see `gym plugins list`")
    if pass_threshold != pass_threshold or pass_threshold in (float("inf"), float("-inf")):
        raise click.BadParameter(f"expected a finite number, got {pass_threshold}", param_hint="--pass-threshold")
    if not given["output"]:
        raise click.UsageError("missing --output FILE.jsonl (or +output_jsonl_fpath=...)")
    ray_options = _ray_options(executor, servers, ray_address, workers, one_per_node)
    if model_urls and servers:
        raise click.UsageError("--model-url is for the runners: pass it to `gym serve`, not with --server")
    use_model_urls(model_urls)
    if ray_options is not None:
        ray_options.model_urls = list(model_urls)
    given["model"] = given["model"] or ("" if servers else default_model())
    if not given["model"] and not servers:
        raise click.UsageError("no model: pass --model openai:NAME (or set GYM_MODEL, or policy_model_name "
                               "in ./env.yaml); for an offline run use --model replay")
    if isinstance(given["parallel"], str):  # --parallel N|auto, or +num_samples_in_parallel=N
        text = given["parallel"].strip().lower()
        given["parallel"] = AUTO if text == AUTO else int(text) if text.lstrip("-").isdigit() else given["parallel"]
    if given["parallel"] == AUTO and servers:
        raise click.UsageError("--parallel auto learns from the model's answers, which the --server runners see, "
                               "not this process: give a number")
    if parallel_max is not None and given["parallel"] != AUTO:
        raise click.UsageError("--parallel-max bounds --parallel auto; with a fixed --parallel it means nothing")
    for key, low in (("limit", 1), ("num_repeats", 1), ("parallel", 0), ("max_steps", 1)):
        value = given[key]
        if key == "parallel" and value == AUTO:
            continue
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            also = " or 'auto'" if key == "parallel" else ""
            raise click.UsageError(f"{key.replace('_', '-')} must be a whole number >= {low}{also}, got {value!r}")
    try:
        max_failures_value = parse_max_failures(max_failures)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-failures")
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite contradict each other: pick one")
    if estimate and resume:
        raise click.UsageError("--estimate runs the pilot at the start of a run; continue it with --resume alone")
    if (price_in is not None or price_out is not None) and not estimate:
        raise click.UsageError("--price-in and --price-out price the projection of --estimate N")
    if servers and judge_model:
        raise click.UsageError("with --server the runners run verify: pass --judge-model to `gym serve` instead")
    if servers and model_timeout is not None:  # the runners call the model, with their own bound
        raise click.UsageError("--model-timeout bounds the model calls of this process; with --server the "
                               "runners call the model: pass it to `gym serve --model-timeout` instead")
    if servers and return_tokens:
        raise click.UsageError("--return-tokens asks the model for token ids; with --server the runners call "
                               "the model: pass it to `gym serve --return-tokens` instead")
    retry = RetryPolicy(max_retries=DEFAULT_MAX_RETRIES if max_retries is None else max_retries)
    config = CollectConfig(
        agent=str(given["agent"] or ""),
        input=Path(given["input"]) if given["input"] else None,
        output=Path(given["output"]),
        model=str(given["model"]),
        limit=given["limit"],
        num_repeats=given["num_repeats"] or 1,
        parallel=DEFAULT_PARALLEL if given["parallel"] is None else given["parallel"],
        parallel_max=parallel_max or DEFAULT_PARALLEL_MAX,
        agent_config=AgentConfig(max_steps=given["max_steps"] or DEFAULT_MAX_STEPS, overrides=overrides,
                                 retry=retry, model_timeout=model_timeout or DEFAULT_MODEL_TIMEOUT,
                                 judge_model=judge_model or None, return_tokens=return_tokens,
                                 seed_repeats=seed_repeats),
        progress=not quiet,
        resume=resume,
        overwrite=overwrite,
        skip_invalid=skip_invalid,
        max_failures=max_failures_value,
        timeout=timeout,
        grace=DEFAULT_GRACE if grace is None else grace,
        handle_signals=True,
        servers=list(servers),
        model_urls=list(model_urls),
        token=token or None,
        ray=ray_options,
        server_timeout=server_timeout,
        pass_threshold=pass_threshold,
        nemo_gym_files=not no_nemo_gym_files,
        estimate=estimate,
        price_in=price_in,
        price_out=price_out,
    )
    try:
        summary = asyncio.run(ProcessSignals.current.main(run_collect(load_plugins(), config)))
    except GymError as exc:
        raise _fail(exc)
    except OSError as exc:  # the system refused a file or socket mid-run (disk full, too many open files)
        kept = f"; what was written is kept: resume with: {resume_command(sys.argv[1:])}" \
            if config.output.exists() else ""
        raise click.ClickException(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ") + kept)
    projection = summary.pop("estimate", None)
    click.echo(format_summary(summary))
    click.echo(f"wrote {config.output} and {metrics_path(config.output)}", err=True)
    resume_hint = f"resume with: {resume_command(sys.argv[1:])}"
    if summary["failed"]:
        by_class = ", ".join(f"{k}={v}" for k, v in summary["failures"].items())
        click.echo(f"gym: {summary['failed']} rollouts failed ({by_class}); they are in "
                   f"{summary['failures_file']}, not in the output", err=True)
    if summary["status"] == "estimated":
        from .estimate import format_projection

        if projection is not None:
            click.echo(format_projection(projection))
        click.echo(f"gym: the pilot's rollouts are in {config.output}; continue the run with: "
                   f"{resume_command(sys.argv[1:])}", err=True)
        return
    if summary["status"] == "interrupted":
        click.echo(f"gym: {summary['stop_reason']}; {resume_hint}", err=True)
        ctx.exit(130)
    if summary["status"] == "stopped":
        click.echo(f"gym: stopped early: {summary['stop_reason']}", err=True)
    if summary["status"] == "stopped" or summary["failed"]:
        click.echo(f"gym: {resume_hint}", err=True)
        ctx.exit(1)


def use_model_urls(urls) -> None:
    """``--model-url``: the replicas' base URLs, read by OpenAI-compatible backends from
    ``OPENAI_BASE_URL`` (comma-separated)."""
    if urls:
        import os

        os.environ["OPENAI_BASE_URL"] = ",".join(urls)


def _ray_options(executor: str, servers, address: str | None, workers: int | None, one_per_node: bool):
    """``--executor ray`` and its options, checked before anything starts (Ray itself is not imported)."""
    if executor != "ray":
        given = [name for name, value in (("--ray-address", address), ("--workers", workers),
                                          ("--one-per-node", one_per_node)) if value]
        if given:
            raise click.UsageError(f"{', '.join(given)} only apply with --executor ray")
        return None
    from .ray_runners import INSTALL_HINT, RayOptions, ray_available

    if servers:
        raise click.UsageError("--executor ray starts its own runners: drop --server")
    if not ray_available():
        raise click.UsageError(INSTALL_HINT)
    return RayOptions(address=address, workers=workers, one_per_node=one_per_node)


def parse_max_failures(value: str | None) -> float | None:
    """``--max-failures``: a whole number of rollouts, or a fraction between 0 and 1."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"expected a whole number or a fraction like 0.1, got {value!r}") from None
    if number < 0 or (number >= 1 and not number.is_integer()) or number != number:
        raise ValueError(f"expected a whole number >= 0 or a fraction between 0 and 1, got {value!r}")
    return number


def resume_command(argv: list[str]) -> str:
    """The command line that resumes this run: the same arguments, ``--resume`` instead of
    ``--overwrite``."""
    import shlex

    args, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--estimate", "--price-in", "--price-out"):  # the pilot's options: the rest is the run
            skip = True
        elif arg.startswith(("--estimate=", "--price-in=", "--price-out=")) or arg in ("--overwrite", "--resume"):
            continue
        else:
            args.append(arg)
    return shlex.join(["gym", *args, "--resume"])


@cli.group()
def plugins():
    """Inspect installed plugins."""


@plugins.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins_list(as_json):
    """List installed plugins: name, kind, distribution, version, hooks and tools.

    Set GYM_LOAD_PLUGINS=a,b to load only those plugins (empty: none).
    """
    import json

    from .inventory import plugin_inventory

    rows = plugin_inventory()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no plugins installed")
        return
    headers = ["name", "kind", "distribution", "version", "provides"]
    table = [[r["name"], r["kind"], r["distribution"] or "-", r["version"] or "-",
              r["error"] and f"FAILED: {r['error']}" or ", ".join(r["tools"] or r["backends"]) or "-"]
             for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *table)]
    for row in [headers, *table]:
        click.echo("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


@cli.command(name="verify")
@click.argument("rollouts", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="New JSONL for the re-scored rollouts (never the file being read).")
@click.option("--agent", "-a", help="Environment whose verify scores them. Default: each line's own agent.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--parallel", "-p", type=click.IntRange(min=1), default=16, show_default=True,
              help="Rollouts verified at once.")
@exits_130_on_signals
def verify_command(rollouts, output, agent, overwrite, parallel):
    """Re-score stored rollouts: run verify again on every line of ROLLOUTS (no model
    calls) and write them, with the new rewards and metrics, to OUTPUT.

    \b
      gym verify results/weather.jsonl --output results/weather.rescored.jsonl

    Prints how many rewards changed (up, down) and the mean reward before and after.
    A rollout whose verify raises goes to OUTPUT's .failures.jsonl, not into OUTPUT;
    the exit status is then 1.
    """
    import asyncio

    from .metrics import format_summary
    from .plugins import load_plugins
    from .rescore import RescoreConfig, rescore
    from .stopping import ProcessSignals

    config = RescoreConfig(rollouts=rollouts, output=output, agent=agent, overwrite=overwrite, parallel=parallel)
    try:
        summary = asyncio.run(ProcessSignals.current.main(rescore(load_plugins(), config)))
    except GymError as exc:
        raise _fail(exc)
    click.echo(format_summary(summary))
    if summary["failed"]:
        click.echo(f"gym: {summary['failed']} rollouts could not be re-scored; they are in "
                   f"{summary['failures_file']}", err=True)
        raise SystemExit(1)


@cli.command(name="compare")
@click.argument("run_a", metavar="A.jsonl", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("run_b", metavar="B.jsonl", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--intersect", is_flag=True, help="Compare the tasks both runs share when their task sets differ "
              "(default: refuse, saying how many matched).")
@click.option("--pass-threshold", type=float, default=1.0, show_default=True,
              help="A rollout passes (for pass@k and flips) when its reward is at least this.")
@click.option("--bootstrap", "resamples", type=click.IntRange(min=100), default=10_000, show_default=True,
              help="Bootstrap resamples of the tasks.")
@click.option("--confidence", type=click.FloatRange(0.5, 1, max_open=True), default=0.95, show_default=True,
              help="Confidence level of the interval.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap (same seed, same interval).")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare_command(run_a, run_b, intersect, pass_threshold, resamples, confidence, seed, as_json):
    """Does run B beat run A on the same tasks? Pairs the runs by task (a row's id, else
    its content) and reports mean reward and pass@k of each, their difference with a
    paired bootstrap interval over tasks, McNemar's test on pass flips, and the flipped
    tasks, worst first. Failed rollouts are counted per side, never as reward 0.

    \b
      gym collect ... --output runs/a.jsonl     # checkpoint A
      gym collect ... --output runs/b.jsonl     # checkpoint B, same input
      gym compare runs/a.jsonl runs/b.jsonl

    The method is in docs/compare.md.
    """
    import json as json_module

    from .compare import compare_runs, format_comparison
    from .outcomes import read_run

    try:
        result = compare_runs(read_run(run_a), read_run(run_b), intersect=intersect, threshold=pass_threshold,
                              resamples=resamples, confidence=confidence, seed=seed)
    except GymError as exc:
        raise _fail(exc)
    click.echo(json_module.dumps(result, indent=2) if as_json else format_comparison(result))


@cli.command(name="filter")
@click.argument("run", metavar="RUN.jsonl", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="JSONL of the kept tasks' input rows.")
@click.option("--pass-rate", metavar="LOW:HIGH", help="Keep tasks whose pass rate over their scored repeats is "
              "within LOW..HIGH (inclusive), e.g. 0.2:0.8.")
@click.option("--drop-zero-variance", is_flag=True, help="Drop tasks whose scored repeats all got the same "
              "reward (no learning signal for group-relative training).")
@click.option("--min-repeats", type=click.IntRange(min=1), help="Scored repeats a task needs to be judged; "
              "tasks with fewer are reported and left out. Default: the run's --num-repeats.")
@click.option("--pass-threshold", type=float, default=1.0, show_default=True,
              help="A rollout passes when its reward is at least this.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
def filter_command(run, output, pass_rate, drop_zero_variance, min_repeats, pass_threshold, overwrite):
    """Keep the tasks of a run in a difficulty band and write their original input rows,
    ready for the next collection or training run.

    \b
      gym collect --agent weather --input tasks.jsonl -n 8 --output runs/probe.jsonl
      gym filter runs/probe.jsonl --pass-rate 0.2:0.8 --drop-zero-variance -o tasks.band.jsonl

    Prints how many tasks each criterion kept. Failed rollouts are not fails: a task with
    too few scored repeats is counted and left out, not guessed.
    """
    from .curate import FilterConfig, curate, parse_band
    from .metrics import format_summary

    try:
        band = parse_band(pass_rate) if pass_rate else None
        summary = curate(FilterConfig(run=run, output=output, pass_rate=band, drop_zero_variance=drop_zero_variance,
                                      min_repeats=min_repeats, threshold=pass_threshold, overwrite=overwrite))
    except GymError as exc:
        raise _fail(exc)
    click.echo(format_summary(summary))


@cli.command(name="datasets")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def datasets_command(as_json):
    """List the task generators of the installed environments (ENV:NAME), for
    `gym dataset make`."""
    import json as json_module

    from .generators import dataset_generators
    from .plugins import load_plugins

    generators = dataset_generators(load_plugins())
    if as_json:
        click.echo(json_module.dumps([{"name": g.spec, "environment": g.environment, "description": g.description}
                                      for g in generators.values()], indent=2))
        return
    if not generators:
        click.echo("no installed environment offers a dataset generator")
        return
    width = max(len(spec) for spec in generators)
    for spec, generator in generators.items():
        click.echo(f"{spec.ljust(width)}  {generator.description}")


@cli.group()
def dataset():
    """Make task datasets with the environments' generators."""


@dataset.command(name="make", context_settings={"ignore_unknown_options": False})
@click.argument("generator", metavar="ENV:NAME")
@click.argument("options", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--size", "-n", type=click.IntRange(min=1), required=True, help="Rows to make.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed (and options), same file.")
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The tasks JSONL to write (whole, or not at all).")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def dataset_make(generator, options, size, seed, output, overwrite, quiet):
    """Generate SIZE tasks with an environment's generator and write them as an input
    JSONL for `gym collect`. KEY=VALUE words are passed to the generator (e.g. a
    difficulty); `gym datasets` lists the generators.

    \b
      gym dataset make reasoning:leg_counting --size 500 --seed 1 -o tasks.jsonl
      gym collect --agent reasoning --input tasks.jsonl --model openai:NAME -o runs/legs.jsonl
    """
    from .generators import dataset_generators, find_generator, make_dataset, parse_options
    from .plugins import load_plugins

    try:
        found = find_generator(dataset_generators(load_plugins()), generator)
        summary = make_dataset(found, output, size=size, seed=seed, options=parse_options(options),
                               overwrite=overwrite, progress=not quiet)
    except GymError as exc:
        raise _fail(exc)
    click.echo(f"wrote {summary['rows']} tasks from {summary['generator']} (seed {seed}) to {output}")


@cli.group()
def new():
    """Start a new plugin from a template."""


@new.command(name="resource")
@click.argument("answers", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--no-input", is_flag=True, help="Do not prompt: use KEY=VALUE answers and the defaults.")
@click.option("--output-dir", "-o", type=click.Path(path_type=Path, file_okay=False), default=Path("."),
              show_default=True, help="Where to create gym-NAME/.")
def new_resource(answers, no_input, output_dir):
    """Create gym-NAME/, a new environment package that works and passes its tests at once.

    KEY is one of name, description, author, author_email, tool_name; NAME must be a
    Python identifier not taken by an installed plugin.

    \b
      gym new resource --no-input name=calculator tool_name=add
      pip install -e 'gym-calculator[test]' && pytest gym-calculator
      gym collect --agent calculator --model replay --output out.jsonl
    """
    from .scaffold import new_resource as generate, parse_answers

    try:
        path = generate(parse_answers(answers), output_dir=output_dir, no_input=no_input)
    except GymError as exc:
        raise _fail(exc)
    click.echo(f"created {path}")
    click.echo(f"next: pip install -e '{path}[test]' && pytest {path}", err=True)


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("file", required=False)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on; 0.0.0.0 exposes the rollouts to your network.")
@click.option("--port", default=7860, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on; 0 picks a free one.")
@click.option("--compare", "compare_with", metavar="B.jsonl", type=click.Path(path_type=Path, dir_okay=False),
              help="A second run of the same tasks: adds an 'A vs B' page (the figures of `gym compare`, a "
              "per-task scatter, each flipped task's rollouts side by side). Same as giving two files.")
@click.pass_context
def view(ctx, file, host, port, compare_with):
    """Browse a rollout JSONL in your browser: overview, filters, tasks, compare.

    \b
      gym view results/weather.jsonl
      gym view +jsonl_fpath=results/weather.jsonl     (the seed's spelling)
      gym view runs/a.jsonl runs/b.jsonl             (A vs B, as `gym compare`)

    Opens at once on big files (indexing runs in the background) and shows new
    rollouts on reload while `gym collect` is still writing. FILE's
    .failures.jsonl sidecar, when present, gets its own tab.
    """
    from .config import parse_assignment

    args = ([file] if file else []) + list(ctx.args)
    paths = []
    try:
        for arg in args:
            if arg.startswith("+"):
                key, value = parse_assignment(arg[1:], "argument")
                if key != "jsonl_fpath":
                    raise UsageError(f"unknown argument +{key} (known: +jsonl_fpath)")
                paths.append(str(value))
            else:
                paths.append(arg)
    except GymError as exc:
        raise _fail(exc)
    if compare_with is not None:
        paths.append(str(compare_with))
    if not 1 <= len(paths) <= 2:
        raise click.UsageError("give one FILE.jsonl (or +jsonl_fpath=FILE), or two runs to compare: "
                               "A.jsonl B.jsonl (or A.jsonl --compare B.jsonl)")
    for path in map(Path, paths):
        if not path.is_file():
            raise click.ClickException(f"{path}: no such file")
    from .viewer.app import serve

    try:
        serve(Path(paths[0]), host, port, echo=lambda text: click.echo(text),
              compare=Path(paths[1]) if len(paths) == 2 else None)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


@cli.command("export")
@click.argument("run", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["sft", "sequences"]), required=True,
              help="sft: OpenAI chat-format fine-tuning rows (messages with tool calls, plus tools); "
              "sequences: token rows (input_ids, loss_mask, logprobs) of a run collected with --return-tokens.")
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="Output JSONL (replaced when complete).")
@click.option("--min-reward", type=float, help="Export only rollouts whose reward is at least this.")
@click.option("--on-drift", type=click.Choice(["fork", "strict"]), default="fork", show_default=True,
              help="sequences: when a call's prompt ids do not extend the previous call's, start a new row "
              "(fork) or stop with an error naming the line (strict).")
def export_command(run, fmt, output, min_reward, on_drift):
    """Export the scored rollouts of RUN (a `gym collect` output) for a trainer.

    Failures are never exported: lines with an error or no reward are skipped, and the
    failures sidecar is never read. See docs/training.md.

    \b
      gym export results/run.jsonl --format sft --min-reward 1 -o sft.jsonl
      gym export results/run.jsonl --format sequences -o sequences.jsonl
    """
    from .export import export

    try:
        stats = export(run, output, fmt, min_reward=min_reward, on_drift=on_drift)
    except GymError as exc:
        raise _fail(exc)
    click.echo(stats.summary(fmt, output), err=True)


@cli.command()
@click.option("--agent", "-a", "agents", multiple=True, required=True,
              help="Environment to host (repeatable; compose with a,b), e.g. weather.")
@click.option("--model", "-m", help="BACKEND:MODEL the agents use, as for `gym collect`. Default: $GYM_MODEL, "
              "else openai:<policy_model_name> from ./env.yaml.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback needs a token.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to bind; 0 picks a free one (the URL is printed).")
@click.option("--token", envvar="GYM_TOKEN", help="Bearer token required on every route but /health "
              "(prefer $GYM_TOKEN: options show in `ps`).")
@click.option("--session-idle-timeout", default=600.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds before an unused session is ended.")
@click.option("--max-body-size", default=16 * 1024 * 1024, show_default=True, type=click.IntRange(min=1024),
              help="Largest request body in bytes.")
@click.option("--shutdown-grace", default=30.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds in-flight requests get to finish on Ctrl-C / SIGTERM.")
@click.option("--max-steps", type=click.IntRange(min=1), help="Default step bound of hosted rollouts. Default: 16.")
@click.option("--model-timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Bound each model call, per attempt, as for `gym collect`. Default: 600.")
@click.option("--judge-model", metavar="BACKEND:NAME", help="A model the agents' verify may call, as for "
              "`gym collect --judge-model`. Default: none.")
@click.option("--return-tokens", is_flag=True, help="Record each model call's exact token ids and logprobs "
              "(prompt_token_ids, generation_token_ids, generation_log_probs on its last output item) and "
              "token_monotonic per rollout, for RL trainers; --model openai-chat: against vLLM >= 0.10.2. "
              "A call that comes back without them fails as 'model:no_tokens'. See docs/training.md.")
@click.option("--model-url", "model_urls", multiple=True, metavar="URL", help="Base URL of one replica of the model, for OpenAI-compatible backends (repeatable: a rollout "
              "stays on one replica, the least loaded when it starts; one that refuses connections is passed "
              "over for a while). Default: $OPENAI_BASE_URL (several: comma-separated).")
@click.option("--max-sessions", default=1024, show_default=True, type=click.IntRange(min=1),
              help="Sessions held at once (open ones and rollouts in flight); past it new ones get 503 "
              "with Retry-After, which `gym collect --server` waits out.")
@click.option("--read-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              metavar="SECONDS", help="Seconds a client gets to send a request's headers (from connecting, or "
              "between requests), and again its body; then the connection is closed (slow-loris).")
@click.option("--max-connections", type=click.IntRange(min=1), metavar="N", help="Connections open at once; "
              "past it the one that waited longest without a complete request is closed. "
              "Default: half the open-file limit.")
def serve(agents, model, host, port, token, session_idle_timeout, max_body_size, shutdown_grace, max_steps,
          model_timeout, judge_model, return_tokens, model_urls, max_sessions, read_timeout, max_connections):
    """Host environments, their model backend and the agent loop over HTTP.

    Prints "serving on http://HOST:PORT" once listening. Routes: GET /openapi.json
    (see docs/serve.md). Drive it with `gym collect --server http://HOST:PORT`.

    \b
      gym serve --agent weather --model replay --port 8000
    """
    import asyncio
    import logging

    from .agent import DEFAULT_MAX_STEPS, AgentConfig
    from .backends import DEFAULT_MODEL_TIMEOUT
    from .config import default_model
    from .plugins import load_plugins
    from .server import check_bind, create_app, serve_until_signalled

    model = model or default_model()
    if not model:
        raise click.UsageError("no model: pass --model openai:NAME (or set GYM_MODEL, or policy_model_name "
                               "in ./env.yaml); for offline use --model replay")
    use_model_urls(model_urls)
    logging.basicConfig(level=logging.WARNING, format="gym serve: %(levelname)s: %(message)s", stream=sys.stderr)
    try:
        check_bind(host, token)
        agent_config = AgentConfig(max_steps=max_steps or DEFAULT_MAX_STEPS,
                                   model_timeout=model_timeout or DEFAULT_MODEL_TIMEOUT, judge_model=judge_model or None,
                                   return_tokens=return_tokens)
        app = create_app(load_plugins(), list(agents), model, token or None, session_idle_timeout=session_idle_timeout,
                         max_body_size=max_body_size, agent_config=agent_config,
                         max_sessions=max_sessions, read_timeout=read_timeout, max_connections=max_connections)
        asyncio.run(serve_until_signalled(app, host, port, shutdown_grace))
    except GymError as exc:
        raise _fail(exc)


def main() -> None:  # pragma: no cover - console entry point
    cli(prog_name="gym")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
