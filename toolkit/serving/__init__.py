"""`toolkit serve`: the relevance judge as an HTTP scoring service (TaoSR1's deployment half).

Because the model answers label first, a pair costs one prompt forward pass: the score is the
softmax over the grade tokens at the label position. CumPT turns those probabilities into
Good/Mid/Bad tiers with one fitted β (`toolkit tier fit`).

Modules: `config` (ServeConfig), `schemas` (request/response bodies), `judge` (the loaded
model: scores, tiers, rationales), `prefix` (shared-prefix scoring for the transformers
backend), `batching` (dynamic batching on the model thread), `guard` (body checks), `app`
(FastAPI routes), `server` (uvicorn). Importing this package is cheap; fastapi, uvicorn and
torch load when the server starts.
"""
