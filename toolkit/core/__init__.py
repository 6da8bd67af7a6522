"""The core: the contracts every other part of the toolkit builds on.

Columns and record names (`columns`), errors (`errors`), grade scales (`grades`), answer parsing
(`parsing`), prompts (`prompts`), progress and logging (`progress`), how student prompts were built
(`lineage`), resumable shards (`shards`), model specs and the default model (`models`), chat templates
(`chat_template`), metrics and plots (`metrics`, `plots`), pairs: reading, checking, choosing a split
(`pairs`, `tables`), reviewed gold grades (`gold`), and the stage-folder contract (`stagefolder`).

The layers, bottom up (tests/test_layers.py enforces them):
  toolkit.core                          imports nothing of the toolkit outside itself
  retrieval_index, annotation, trainers import the core only (not toolkit's stages, not each other)
  toolkit.generation                    the LLM backends: the core only
  toolkit's stage modules               the core, the engines and the packages above
  toolkit.cli                           the shells: every command, and the pipeline runner
"""
