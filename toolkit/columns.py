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

# Retrieval results written next to each pair.
RULE_IDS = "rule_ids"
RULE_SCORES = "rule_scores"

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
