"""The output file names of every stage, defined once: producers write them, the next stage, the trainers,
`toolkit push` and the review tools read them from here."""

PAIRS_FILE = "pairs.parquet"  # ingest; split writes one <split>.parquet per split instead
SNIPPETS_FILE = "snippets.parquet"  # build-index: one row per rule snippet (row i = faiss row i)
EMBEDDINGS_FILE = "embeddings.npy"  # build-index
FAISS_FILE = "index.faiss"  # build-index
RULES_MD, RULES_JSONL = "rules.md", "rules.jsonl"  # atomize
SFT_FILE = "sft.parquet"  # gen-cot: the kept rationales (TRL messages)
REJECTS_FILE = "rejects.parquet"  # gen-cot: the filtered ones, with their reason
STATS_FILE = "stats.json"  # gen-cot: the filters' counts
ROLLOUTS_FILE = "rollouts.parquet"  # sample: one row per rollout
PROMPTS_FILE = "prompts.parquet"  # sample: one row per pair
PASSK_FILES = ("passk.md", "passk.json", "passk.csv", "passk.png")  # sample and passk
PREDICTIONS_FILE = "predictions.parquet"  # score and train baseline: grade probabilities per pair
PREFS_FILE = "preferences.parquet"  # make-prefs: TRL prompt/chosen/rejected
TEACHER_FILE = "teacher_answers.parquet"  # make-prefs: the teacher's fallback answers
DIFFICULTY_FILE = "difficulty.parquet"  # label-difficulty: pass rate per pair
GRPO_FILE = "grpo.parquet"  # label-difficulty: the GRPO prompts
METRICS_FILE = "metrics.json"  # eval
REPORT_FILE = "report.md"  # eval and review pull
RULE_FILE = "tiers.json"  # tier fit: the CumPT rule
TRAIN_LOG = "train_log.json"  # train-*: TRL's log history
REVIEW_DIR = "review"  # review pull and review apply: the review's own files
CHANGES_FILE, EXCLUDED_FILE = "changes.parquet", "excluded.parquet"  # review apply, inside REVIEW_DIR
