"""Generation commands: `toolkit gen-cot` (teacher rationales -> SFT data)."""

from __future__ import annotations

import click

from toolkit.cli.common import config_option


def backend_options(f):
    """Options that pick and configure a generation backend (shared by generating stages)."""
    opts = [
        click.option("--backend", type=click.Choice(["transformers", "vllm", "openai"]), default="transformers", show_default=True,
                     help="transformers (CPU/GPU fallback), vllm (in-process engine), openai (any OpenAI-compatible server)."),
        click.option("--model", help="Model folder, hub id, or `default` (SmolLM2-135M-Instruct, embedded). For openai: the served model name."),
        click.option("--batch-size", default=16, show_default=True, type=int, help="Prompts per batch (transformers)."),
        click.option("--dtype", default="auto", show_default=True, type=click.Choice(["auto", "float32", "bfloat16"]),
                     help="Weights' dtype: auto = bfloat16 on GPUs, float32 on CPUs (transformers); the engine's choice (vllm)."),
        click.option("--base-url", help="[openai] server URL, e.g. http://127.0.0.1:8000/v1"),
        click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True, help="[openai] environment variable holding the API key (never logged)."),
        click.option("--concurrency", default=8, show_default=True, type=int, help="[openai] requests in flight."),
        click.option("--n-per-request", default=0, show_default=True, type=int,
                     help="[openai] samples asked for in one request; 0 = all n at once, 1 for APIs that reject n > 1 (DeepSeek's)."),
        click.option("--timeout", "timeout_s", default=120.0, show_default=True, type=float, help="[openai] seconds per request."),
        click.option("--max-retries", default=5, show_default=True, type=int, help="[openai] retries (exponential backoff) on 429/5xx, timeouts, dropped connections."),
        click.option("--enforce-eager", is_flag=True, help="[vllm] skip torch.compile (faster start, slower steps)."),
        click.option("--max-model-len", default=4096, show_default=True, type=int, help="[vllm] context length of the engine (prompt + answer)."),
        click.option("--template-option", "template_options", multiple=True, metavar="KEY=VALUE",
                     help="A chat-template option, e.g. enable_thinking=false (set by default for templates that have it); repeatable."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def make_backend_config(kw: dict):
    from toolkit.generation.base import BackendConfig

    return BackendConfig(
        kind=kw.pop("backend"), model=kw.pop("model"), batch_size=kw.pop("batch_size"), dtype=kw.pop("dtype"),
        base_url=kw.pop("base_url"), api_key_env=kw.pop("api_key_env"), concurrency=kw.pop("concurrency"),
        timeout_s=kw.pop("timeout_s"), enforce_eager=kw.pop("enforce_eager"), max_retries=kw.pop("max_retries"),
        max_model_len=kw.pop("max_model_len"), n_per_request=kw.pop("n_per_request"), template_options=list(kw.pop("template_options", ()) or ()),
    )


@click.command("gen-cot")
@config_option
@click.argument("pairs", required=False, type=click.Path())
@click.option("-o", "--out", type=click.Path(), help="Output folder: sft.parquet, rejects.parquet, stats.json, .shards/.")
@click.option("--split", default="train", show_default=True, help="Use the rows of this split when the input has splits ('' for all).")
@click.option("--index", type=click.Path(), help="Rules index folder (toolkit build-index); rule texts go into the prompts.")
@click.option("--rules-k", default=3, show_default=True, type=int, help="Rules per prompt.")
@click.option("--samples", default=1, show_default=True, type=int, help="Rationales sampled per pair (k).")
@click.option("--temperature", default=0.7, show_default=True, type=float, help="Sampling temperature of the teacher.")
@click.option("--top-p", default=0.95, show_default=True, type=float, help="Nucleus sampling: keep the smallest token set with this much probability.")
@click.option("--max-tokens", default=320, show_default=True, type=int, help="Token budget of a free-mode answer.")
@click.option("--seed", default=0, show_default=True, type=int, help="Base seed; each shard and prompt gets its own seed from it (reruns give the same samples).")
@click.option("--mode", type=click.Choice(["guided", "free"]), default="guided", show_default=True,
              help="guided: the five step headers are written into the answer and the teacher fills each (small models); free: one generation (capable teachers).")
@click.option("--step-tokens", default=48, show_default=True, type=int, help="[guided] token budget per step.")
@click.option("--no-gold", is_flag=True, help="Do not tell the teacher the gold grade (then agreement is a real accuracy).")
@click.option("--order", type=click.Choice(["label_first", "cot_first"]), default="label_first", show_default=True, help="Order of the SFT targets.")
@click.option("--shard-size", default=32, show_default=True, type=int, help="Pairs per shard (the unit of resumption).")
@click.option("--limit", type=int, help="Only the first N pairs.")
@click.option("--min-chars", default=40, show_default=True, type=int, help="Drop shorter rationales.")
@click.option("--max-chars", default=2000, show_default=True, type=int, help="Drop longer rationales.")
@click.option("--force", is_flag=True, help="Regenerate every shard (a rerun otherwise reuses the finished ones).")
@backend_options
def gen_cot(pairs, out, split, index, rules_k, samples, temperature, top_p, max_tokens, seed, mode, step_tokens, no_gold, order, shard_size,
            limit, min_chars, max_chars, force, **backend):
    """Generate teacher rationales and keep those that agree with the gold grade (TaoSR1 stage 1).

    For each pair: retrieve rules, prompt the teacher with the pair, the rules and (by
    default) the gold grade, sample k five-step rationales (query understanding, item
    understanding, category match, attribute match, decision), parse, and filter: format,
    grade agreement, length, repetition, copying the prompt, near-duplicates. Kept rows
    become label-first SFT data in TRL's prompt/completion format; every drop is in
    rejects.parquet with its reason. Rerunning skips finished shards.

    \b
    Example:
      toolkit gen-cot out/demo/retrieved --index out/demo/index -o out/demo/cot
    """
    from toolkit.cot import GenCotConfig, gen_cot as run
    from toolkit.cot_filters import FilterConfig
    from toolkit.core.errors import UserError

    if not pairs or not out:
        raise UserError("pass the pairs and an output folder: `toolkit gen-cot out/splits -o out/cot`")
    cfg = GenCotConfig(
        pairs=pairs, out=out, split=split or None, backend=make_backend_config(backend), samples=samples, temperature=temperature,
        top_p=top_p, max_tokens=max_tokens, seed=seed, mode=mode, step_tokens=step_tokens, give_gold=not no_gold, order=order,
        index=index, rules_k=rules_k, shard_size=shard_size, limit=limit, filters=FilterConfig(min_chars=min_chars, max_chars=max_chars),
        force=force,
    )
    click.echo(run(cfg).summary())


@click.command("sample")
@config_option
@click.argument("pairs", required=False, type=click.Path())
@click.option("-o", "--out", type=click.Path(), help="Output rollouts folder: rollouts.parquet, prompts.parquet, passk.*")
@click.option("--split", default="train", show_default=True, help="Use the rows of this split when the input has splits ('' for all).")
@click.option("--index", type=click.Path(), help="Rules index folder; rule texts go into the student prompts.")
@click.option("--rules-k", default=3, show_default=True, type=int, help="Rules per prompt.")
@click.option("-n", "--n", "n", default=4, show_default=True, type=int, help="Rollouts per pair (N of pass@N; G of GRPO).")
@click.option("--temperature", default=0.99, show_default=True, type=float, help="Sampling temperature of the rollouts (TaoSR1: 0.99).")
@click.option("--top-p", default=1.0, show_default=True, type=float, help="Nucleus sampling: keep the smallest token set with this much probability.")
@click.option("--max-tokens", default=96, show_default=True, type=int, help="Token budget per rollout (label first, then the reason).")
@click.option("--seed", default=0, show_default=True, type=int, help="Base seed; each shard and prompt gets its own seed from it (reruns give the same samples).")
@click.option("--order", type=click.Choice(["label_first", "cot_first"]),
              help="Answer order the model was trained on (where the grade is parsed from); default: the order in the model's manifest, else label_first.")
@click.option("--shard-size", default=64, show_default=True, type=int, help="Pairs per shard (the unit of resumption).")
@click.option("--limit", type=int, help="Only the first N pairs.")
@click.option("--force", is_flag=True, help="Redo even when the output is up to date.")
@backend_options
def sample_cmd(pairs, out, split, index, rules_k, n, temperature, top_p, max_tokens, seed, order, shard_size, limit, force, **backend):
    """Sample N answers per pair from a policy model and grade them against gold (pass@N).

    Stores per rollout the raw text, parse status, predicted grade, correctness and the
    first-token grade probabilities; prints and writes the pass@k table (k = 1..N) and plot.
    The output feeds `toolkit make-prefs` and `toolkit label-difficulty`. Resumable by shard.

    \b
    Example:
      toolkit sample out/demo/retrieved --model out/demo/sft --index out/demo/index -n 4 -o out/demo/rollouts
    """
    from toolkit.core.errors import UserError
    from toolkit.sample import SampleConfig, sample

    if not pairs or not out:
        raise UserError("pass the pairs and an output folder: `toolkit sample out/splits -o out/rollouts`")
    cfg = SampleConfig(pairs=pairs, out=out, split=split or None, backend=make_backend_config(backend), n=n, temperature=temperature,
                       top_p=top_p, max_tokens=max_tokens, seed=seed, order=order, index=index, rules_k=rules_k,
                       shard_size=shard_size, limit=limit, force=force)
    result = sample(cfg)
    if result.passk is not None:
        click.echo(result.passk.markdown)
    click.echo(result.summary())


@click.command("score")
@config_option
@click.argument("pairs", required=False, type=click.Path())
@click.option("-o", "--out", type=click.Path(), help="Output folder: predictions.parquet (+ .shards/).")
@click.option("--split", help="Score only rows of this split (default: all rows).")
@click.option("--index", type=click.Path(), help="Rules index folder; rule texts go into the prompts.")
@click.option("--rules-k", default=3, show_default=True, type=int, help="Rules per prompt.")
@click.option("--mode", type=click.Choice(["first-token", "generate"]), default="first-token", show_default=True,
              help="first-token: softmax over the grade tokens at the label position (one forward pass); generate: sample and parse.")
@click.option("--order", type=click.Choice(["label_first", "cot_first"]),
              help="Answer order the model was trained on (where the grade is parsed from); default: the order in the model's manifest, else label_first.")
@click.option("--max-tokens", default=96, show_default=True, type=int, help="[generate] token budget.")
@click.option("--shard-size", default=256, show_default=True, type=int, help="Pairs per shard (the unit of resumption).")
@click.option("--limit", type=int, help="Only the first N pairs.")
@click.option("--force", is_flag=True, help="Redo even when the output is up to date.")
@backend_options
def score_cmd(pairs, out, split, index, rules_k, mode, order, max_tokens, shard_size, limit, force, **backend):
    """Score pairs with a model: first-token grade probabilities (TaoSR1's serving path).

    Writes predictions.parquet (pair_id, grade, split, grade_probs best grade first,
    pred_grade = argmax, and text in generate mode) for `toolkit eval` and `toolkit tier`.

    \b
    Example:
      toolkit score out/demo/retrieved --model out/demo/grpo --index out/demo/index -o out/demo/scores
      toolkit eval --predictions out/demo/scores --split test -o out/demo/eval
    """
    from toolkit.core.errors import UserError
    from toolkit.scoring import ScoreConfig, score

    if not pairs or not out:
        raise UserError("pass the pairs and an output folder: `toolkit score out/splits --model M -o out/scores`")
    cfg = ScoreConfig(pairs=pairs, out=out, split=split, backend=make_backend_config(backend), mode=mode, order=order, index=index,
                      rules_k=rules_k, max_tokens=max_tokens, shard_size=shard_size, limit=limit, force=force)
    click.echo(score(cfg).summary())


@click.command("atomize")
@config_option
@click.argument("guideline", required=False, type=click.Path())
@click.option("-o", "--out", type=click.Path(), help="Output folder: rules.md (candidate rules), rules.jsonl (provenance).")
@click.option("--max-passage-chars", default=1200, show_default=True, type=int, help="Guideline text per LLM request.")
@click.option("--max-tokens", default=384, show_default=True, type=int, help="Token budget of the rules for one passage.")
@click.option("--temperature", default=0.0, show_default=True, type=float, help="Sampling temperature (0 = greedy: the same rules every run).")
@click.option("--seed", default=0, show_default=True, type=int, help="Base seed; each shard and prompt gets its own seed from it (reruns give the same samples).")
@click.option("--no-prefill", is_flag=True, help="Do not start the answer with '- ' (for servers without assistant prefill).")
@click.option("--id-prefix", default="A", show_default=True, help="Rule ids are PREFIX01, PREFIX02, ...")
@backend_options
def atomize_cmd(guideline, out, max_passage_chars, max_tokens, temperature, seed, no_prefill, id_prefix, **backend):
    """Split a prose guideline into candidate atomic rules with an LLM, for review.

    The guideline (.txt or .md) is cut into passages at headings and paragraphs; the LLM
    rewrites each passage as one self-contained rule per line. rules.md lists the candidates
    in the rules format (`## Section`, `- [A01] rule`) that `toolkit build-index` reads once a
    person has reviewed them; rules.jsonl records each rule's source lines and passage.

    \b
    Example:
      toolkit atomize ../shared/data/homedepot/relevance_instructions.txt -o out/atomized
    """
    from toolkit.atomize import AtomizeConfig, atomize
    from toolkit.core.errors import UserError

    if not guideline or not out:
        raise UserError("pass a guideline file and an output folder: `toolkit atomize guideline.txt -o out/atomized`")
    cfg = AtomizeConfig(guideline=guideline, out=out, backend=make_backend_config(backend), max_passage_chars=max_passage_chars,
                        max_tokens=max_tokens, temperature=temperature, seed=seed, prefill=not no_prefill, id_prefix=id_prefix)
    click.echo(atomize(cfg).summary())


COMMANDS = [gen_cot, sample_cmd, score_cmd, atomize_cmd]
