"""Run `python -m argilla_server ARGS` with one compatibility patch for osmem-server.

    .venv-argilla/bin/python annotation/stack/argilla_launch.py start --host 127.0.0.1 --port 6900

Runs inside the server's own venv (.venv-argilla), never in the toolkit's. Argilla 2.8 stores a
single response (the UI's Submit button, POST /api/v1/records/{id}/responses) in the database and
then updates the record's search document with a Painless script; osmem-server, the in-memory
OpenSearch-compatible engine of the local stack, answers "update with script is not supported".
The patch does the same update without a script: read the document, edit its `responses` list,
write the whole document back. A real OpenSearch or Elasticsearch needs no patch (the
script path is left untouched when ARGILLA_STACK_PATCH=0).
"""

from __future__ import annotations

import os
import runpy


def _patch() -> None:
    from argilla_server.search_engine.commons import BaseElasticAndOpenSearchEngine, es_index_name_for_dataset

    async def _put(self, index: str, doc_id: str, source: dict) -> None:
        from fastapi.encoders import jsonable_encoder

        await self.client.index(index=index, id=doc_id, body=jsonable_encoder(source), refresh=True)

    async def _rewrite_responses(self, response, keep_new: bool) -> None:
        record = response.record
        index = es_index_name_for_dataset(record.dataset)
        doc = await self.client.get(index=index, id=str(record.id))
        source = doc.get("_source") or {}
        responses = [r for r in (source.get("responses") or []) if str(r.get("id")) != str(response.id)]
        if keep_new:
            responses.append(self._map_record_response_to_es(response))
        await _put(self, index, str(record.id), {**source, "responses": responses})

    async def update_record_response(self, response) -> None:
        await _rewrite_responses(self, response, keep_new=True)

    async def delete_record_response(self, response) -> None:
        await _rewrite_responses(self, response, keep_new=False)

    async def delete_record_suggestion(self, suggestion) -> None:
        index = es_index_name_for_dataset(suggestion.record.dataset)
        doc = await self.client.get(index=index, id=str(suggestion.record_id))
        source = doc.get("_source") or {}
        suggestions = dict(source.get("suggestions") or {})
        suggestions.pop(suggestion.question.name, None)
        await _put(self, index, str(suggestion.record_id), {**source, "suggestions": suggestions})

    BaseElasticAndOpenSearchEngine.update_record_response = update_record_response
    BaseElasticAndOpenSearchEngine.delete_record_response = delete_record_response
    BaseElasticAndOpenSearchEngine.delete_record_suggestion = delete_record_suggestion


if __name__ == "__main__":
    if os.environ.get("ARGILLA_STACK_PATCH", "1") != "0":
        _patch()
    runpy.run_module("argilla_server", run_name="__main__", alter_sys=True)
