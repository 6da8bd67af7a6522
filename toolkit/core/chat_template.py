"""Chat-template options: what a model's template is asked to do besides rendering the messages.

First-token scoring and label-first training assume the grade label is the first token after the
generation prompt. Templates of reasoning models (Qwen3-style) open a `<think>` block there unless
told not to (`enable_thinking=False`), which breaks that silently: the "first-token" probabilities
are then those of the thinking text. So:
- `template_options(template, given)`: the user's options (`--template-option KEY=VALUE`), plus
  `enable_thinking=False` when the template has that switch and the user did not set it;
- `check_generation_prompt(text)`: a rendered generation prompt must not leave a `<think>` block open,
  else a one-line error says which option to pass.
Every backend (transformers, vllm, and the openai backend for a vLLM server: `chat_template_kwargs`)
and every trainer (TRL's `chat_template_kwargs`) gets the same options.
"""

from __future__ import annotations

from toolkit.core.errors import UserError

THINK_SWITCH = "enable_thinking"
OPEN, CLOSE = "<think>", "</think>"


def parse_options(items: "list[str] | tuple[str, ...] | dict | None") -> dict:
    """`KEY=VALUE` items (values read as YAML scalars: true, 3, text) -> a dict; a dict passes through."""
    import yaml

    if not items:
        return {}
    if isinstance(items, dict):
        return dict(items)
    out = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise UserError(f"--template-option {item!r}: give KEY=VALUE, e.g. enable_thinking=false")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out


def template_options(template: str | None, given: dict | None) -> dict:
    """The options to render with: the user's, plus enable_thinking=False for templates that know the switch."""
    opts = dict(given or {})
    if template and THINK_SWITCH in template and THINK_SWITCH not in opts:
        opts[THINK_SWITCH] = False
    return opts


def check_generation_prompt(text: str, model_id: str, options: dict) -> None:
    """A generation prompt that ends inside an open <think> block: the first answer token cannot be a grade."""
    i = text.rfind(OPEN)
    if i >= 0 and CLOSE not in text[i:]:
        hint = "pass --template-option enable_thinking=false" if options.get(THINK_SWITCH) is not False else \
            "this template opens it even with enable_thinking=false; " \
            "pass the option your template uses to skip thinking"
        raise UserError(f"model {model_id}: its chat template opens a {OPEN} block after the generation prompt, "
                        "so the first answer token cannot be a grade label "
                        f"(first-token scores and label-first answers would be wrong); {hint}")
