"""The transformers backend: batched chat generation and first-token grade scoring on CPU or GPU."""

from __future__ import annotations

import logging

from toolkit.core.errors import UserError, missing_extra
from toolkit.core.models import pick_dtype
from toolkit.generation.base import BackendConfig, Generation, Messages, SamplingConfig, is_prefill

log = logging.getLogger(__name__)


def _torch():
    try:
        import torch
        import transformers
    except ImportError as e:
        raise missing_extra("train", e.name or "torch") from None
    from toolkit.core.progress import quiet_libraries

    quiet_libraries()  # the CLI's verbosity for transformers' logs and its "Loading weights" bar
    return torch, transformers


def transformers_stop(tokenizer, stops: list[str], prompt_len: int):
    """Stop a row once its new text contains a stop string (cheap: decodes the last few tokens).

    transformers' own `stop_strings` builds tables over the whole vocabulary on every call,
    which costs seconds per call with a 49k vocabulary.
    """
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            tails = tokenizer.batch_decode(input_ids[:, max(prompt_len, input_ids.shape[1] - 4):],
                                           skip_special_tokens=True)
            return torch.tensor([any(st in t for st in stops) for t in tails], dtype=torch.bool,
                                device=input_ids.device)

    return StoppingCriteriaList([_Stop()])


class TransformersBackend:
    name = "transformers"

    def __init__(self, cfg: BackendConfig, model=None, tokenizer=None):
        torch, transformers = _torch()
        from toolkit.core.models import resolve_model
        from toolkit.core.stagefolder.remote import snapshot_model_id

        self.cfg = cfg
        self.torch = torch
        if model is not None:
            self.model, self.tokenizer = model, tokenizer
            name = getattr(model.config, "_name_or_path", None) or "in-memory"
            self.model_id = snapshot_model_id(name) or name
        else:
            path = resolve_model(cfg.model)
            self.model_id = snapshot_model_id(path) or path  # a hub id as owner/name@COMMIT
            dtype = pick_dtype(cfg.dtype, torch)
            try:
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
                self.model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
            except OSError as e:
                raise UserError(f"cannot load model {self.model_id!r}: {str(e).splitlines()[0]}") from None
            self.model.to("cuda" if torch.cuda.is_available() else "cpu")
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if not getattr(self.tokenizer, "chat_template", None):
            raise UserError(f"model {self.model_id!r} has no chat template; use an instruct/chat model")
        from toolkit.core.chat_template import template_options

        self.template_options = template_options(self.tokenizer.chat_template, cfg.template_options)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def render(self, messages: Messages) -> str:
        from toolkit.core.chat_template import check_generation_prompt

        opts = self.template_options
        if is_prefill(messages):  # continue that assistant message
            return self.tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True, **opts)
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **opts)
        check_generation_prompt(text, self.model_id, opts)
        return text

    def _encode(self, prompts: list[Messages]):
        texts = [self.render(m) for m in prompts]
        return self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)

    def _batches(self, prompts: list[Messages]):
        """Index batches, longest prompts first, so padding stays small."""
        order = sorted(range(len(prompts)), key=lambda i: -len(str(prompts[i])))
        bs = max(1, self.cfg.batch_size)
        for s in range(0, len(order), bs):
            yield order[s : s + bs]

    def generate(self, prompts: list[Messages], sampling: SamplingConfig,
                 grade_labels: list[str] | None = None) -> list[Generation]:
        torch = self.torch
        from toolkit.core.models import grade_token_ids

        label_ids = (grade_token_ids(self.tokenizer, grade_labels) if (sampling.grade_logprobs and grade_labels)
                     else None)
        out: list[Generation | None] = [None] * len(prompts)
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        for b, idx in enumerate(self._batches(prompts)):
            enc = self._encode([prompts[i] for i in idx])
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed + b)
            kwargs = dict(
                max_new_tokens=sampling.max_tokens,
                num_return_sequences=sampling.n,
                pad_token_id=self.tokenizer.pad_token_id,
                return_dict_in_generate=True,
                output_logits=label_ids is not None,
            )
            if sampling.stop:
                kwargs["stopping_criteria"] = transformers_stop(self.tokenizer, sampling.stop,
                                                                enc["input_ids"].shape[1])
            if sampling.temperature > 0:
                kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            with torch.inference_mode():
                res = self.model.generate(**enc, **kwargs)
            plen = enc["input_ids"].shape[1]
            new = res.sequences[:, plen:]
            first_lp = None
            if label_ids is not None:
                first_lp = torch.log_softmax(res.logits[0].float(), dim=-1)[:, label_ids].tolist()
            for j, i in enumerate(idx):
                texts, reasons, ntoks, lps = [], [], [], []
                for s in range(sampling.n):
                    row = new[j * sampling.n + s].tolist()
                    cut = next((k for k, t in enumerate(row) if t in eos_ids), None)
                    toks = row if cut is None else row[:cut]
                    text = self.tokenizer.decode(toks, skip_special_tokens=True)
                    stopped = cut is not None
                    for st in sampling.stop or []:
                        if st in text:
                            text, stopped = text[: text.index(st)], True
                    texts.append(text)
                    reasons.append("stop" if stopped or len(toks) < sampling.max_tokens else "length")
                    ntoks.append(len(toks))
                    if first_lp is not None:
                        lps.append(dict(zip(grade_labels, first_lp[j * sampling.n + s])))
                prompt_tokens = int(enc["attention_mask"][j].sum())
                out[i] = Generation(texts, reasons, prompt_tokens, ntoks, lps if first_lp is not None else None)
        return out  # type: ignore[return-value]

    def score_grades(self, prompts: list[Messages], grade_labels: list[str]) -> list[list[float]]:
        """P(label) for each grade label as the first answer token, renormalised over the labels."""
        torch = self.torch
        from toolkit.core.models import grade_token_ids

        ids = grade_token_ids(self.tokenizer, grade_labels)
        out: list[list[float] | None] = [None] * len(prompts)
        for idx in self._batches(prompts):
            enc = self._encode([prompts[i] for i in idx])
            with torch.inference_mode():
                logits = self.model(**enc, logits_to_keep=1).logits[:, -1, :]
            probs = torch.softmax(logits[:, ids].float(), dim=-1)
            bad = int((~torch.isfinite(probs).all(dim=-1)).sum())
            if bad:  # else NaN is written to predictions.parquet, and eval refuses it later, far from the cause
                raise UserError(f"model {self.model_id!r} gave non-finite grade probabilities for {bad} of the "
                                f"{len(idx)} prompts of a batch (left-padded batches on some GPUs do this, or the "
                                f"weights are broken); rerun with --batch-size 1, or check the model")
            probs = probs.tolist()
            for j, i in enumerate(idx):
                out[i] = probs[j]
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self.model = None
