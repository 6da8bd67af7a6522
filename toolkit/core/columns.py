"""Column names, defined once. Producers and consumers import them from here."""

# Canonical pair records (toolkit ingest / split).
PAIR_ID = "pair_id"
QUERY = "query"
TITLE = "title"
DESCRIPTION = "description"
ATTRIBUTES = "attributes"  # JSON object as a string, keys sorted
CATEGORY = "category"
BRAND = "brand"
GRADE = "grade"  # integer grade value on the dataset's grade scale
RAW_LABEL = "raw_label"  # the label as the source wrote it
SOURCE = "source"
SPLIT = "split"
ITEM_ID = "item_id"
QUERY_ID = "query_id"

PAIR_COLUMNS = [
    PAIR_ID,
    QUERY,
    TITLE,
    DESCRIPTION,
    ATTRIBUTES,
    CATEGORY,
    BRAND,
    GRADE,
    RAW_LABEL,
    SOURCE,
    SPLIT,
    ITEM_ID,
    QUERY_ID,
]
REQUIRED_PAIR_COLUMNS = [PAIR_ID, QUERY, TITLE, GRADE]
# Columns hashed into the stable pair id (the item's content and the query).
PAIR_ID_FIELDS = [QUERY, TITLE, DESCRIPTION, ATTRIBUTES, CATEGORY, BRAND]

# Retrieval results written next to each pair (`toolkit retrieve`): snippet ids, best first,
# and their scores (cosine similarity, or the fused score when lexical matching is on).
RULE_IDS = "rule_ids"
RULE_SCORES = "rule_scores"
KNOWLEDGE_IDS = "knowledge_ids"  # only with --knowledge-k > 0
KNOWLEDGE_SCORES = "knowledge_scores"

# Snippets of the retrieval index (snippets.parquet in an index folder, row i = faiss row i).
SNIPPET_ID = "snippet_id"
SNIPPET_KIND = "kind"  # "rule" or "knowledge"
SNIPPET_TEXT = "text"
SNIPPET_TAGS = "tags"  # list of strings
SNIPPET_GRADE_HINT = "grade_hint"  # e.g. "<=3", "2"; null when the rule gives none
SNIPPET_SCOPE = "category_scope"  # list of category paths the snippet is limited to; empty = everywhere
SNIPPET_SOURCE = "source"  # file:line it came from
SNIPPET_HASH = "text_hash"  # hash of the embedded text; the embeddings cache key
SNIPPET_COLUMNS = [SNIPPET_ID, SNIPPET_KIND, SNIPPET_TEXT, SNIPPET_TAGS, SNIPPET_GRADE_HINT, SNIPPET_SCOPE,
                   SNIPPET_SOURCE, SNIPPET_HASH]

# TRL's dataset column names, used by producers (gen-cot, make-prefs) and trainers alike.
PROMPT = "prompt"
CHOSEN = "chosen"
REJECTED = "rejected"
MESSAGES = "messages"
COMPLETION = "completion"

# Split names.
TRAIN = "train"
DEV = "dev"
TEST = "test"
UNSPLIT = ""

# Rollouts (toolkit sample): one row per (pair, sample).
SAMPLE_IDX = "sample_idx"
TEXT = "text"  # the raw generated text
FINISH_REASON = "finish_reason"
PARSE_STATUS = "parse_status"  # see toolkit.core.parsing.ParseStatus
PRED_GRADE = "pred_grade"  # parsed grade value, null when unparseable
CORRECT = "correct"  # pred_grade == grade
GRADE_PROBS = "grade_probs"  # first-token probabilities of the grade labels, scale order (best first)
RATIONALE = "rationale"  # the reasoning text without the label

# Preferences and difficulty (toolkit make-prefs / label-difficulty).
N_SAMPLES = "n_samples"
N_CORRECT = "n_correct"
PASS_RATE = "pass_rate"
DIFFICULTY = "difficulty"
CHOSEN_SOURCE = "chosen_source"  # self | teacher
REJECTED_GRADE = "rejected_grade"
CHOSEN_GRADE = "chosen_grade"

# Evaluation and CumPT tiering (toolkit eval / toolkit tier).
CUMPT_GRADE = "cumpt_grade"  # the grade CumPT picks with the fitted beta
TIER = "tier"  # Good / Mid / Bad (names from the tier rule)
PARSED_GRADE = "parsed_grade"  # the input's pred_grade, kept when `toolkit eval` replaces it by the argmax grade

# -- added by the rollouts/preferences/difficulty stages (issue 5) --
CHOSEN_SAMPLE_IDX = "chosen_sample_idx"  # sample_idx of the chosen rollout; null when the teacher wrote it
REJECTED_SAMPLE_IDX = "rejected_sample_idx"
REJECTED_PARSE_STATUS = "rejected_parse_status"
GOLD_LABEL = "gold_label"  # the gold grade's label string (what a correct answer starts with), for GRPO rewards

# -- Review (toolkit review push / pull; Argilla) ----------------------------------------------
# Inputs the review kinds read besides the columns above.
MODEL = "model"  # id of the model (or teacher) that produced a row
RULE_TEXTS = "rule_texts"  # list of retrieved rule texts, best first (shown to reviewers)
# Added by `toolkit review pull` to each row of the merged dataset.
REVIEW_STATUS = "review_status"  # see annotation.merge.STATUSES
REVIEWERS = "reviewers"  # list of the usernames whose submitted answers were used
REVIEW_COMMENT = "review_comment"  # reviewers' comments, "user: text" joined by " | "
# review/dropped.parquet: rows removed by the review, with the rule that removed them.
DROP_REASON = "drop_reason"
# review/responses.parquet: one row per (record, reviewer, question).
RECORD_ID = "record_id"  # the Argilla record id: pair_id, plus -s<sample_idx> (cot) or -c<i>-r<j> (prefs)
REVIEWER = "reviewer"
HONEYPOT = "honeypot"  # review select: a gold record mixed into a round to check reviewers (never merged)
HONEYPOT_GRADE = "honeypot_grade"  # its trusted grade (the grade shown is planted next to it)
QUESTION = "question"
VALUE = "value"
RESPONSE_STATUS = "response_status"  # submitted | draft | discarded
# review/changes.parquet: the change log, one row per changed cell or dropped row.
CHANGED_COLUMN = "column"
OLD_VALUE = "old_value"  # JSON text
NEW_VALUE = "new_value"  # JSON text
CHANGE_REASON = "reason"
