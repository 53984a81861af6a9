"""Prompt, queue, history, interrupt, free and jobs routes (ComfyUI's shapes)."""
from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..errors import ValidationError, WorkflowError
from ..queue.queue import finite_number
from ..validation import validate_prompt
from ..workflow.api_format import normalize_api_prompt
from ..workflow.ui_format import looks_like_ui_workflow, ui_to_api
from .middleware import BadRequest, parse_json_body

if TYPE_CHECKING:
    from .app import RouteList, ServerState

log = logging.getLogger(__name__)

JOB_STATUSES = frozenset({"pending", "in_progress", "completed", "failed", "cancelled"})


def _prompt_error(type: str, message: str, details: str = "") -> web.Response:
    return web.json_response({"error": {"type": type, "message": message, "details": details, "extra_info": {}},
                              "node_errors": {}}, status=400)


def query_int(request: web.Request, name: str, default: int | None, *, minimum: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter '{name}' must be an integer, got {raw[:50]!r}") from None
    if minimum is not None and value < minimum:
        raise BadRequest(f"query parameter '{name}' must be at least {minimum}")
    return value


def _id_list(body: dict[str, Any], key: str) -> list[str]:
    ids = body.get(key)
    if ids is None:
        return []
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise BadRequest(f"'{key}' must be a list of prompt ids")
    return ids


async def _json_object(request: web.Request, *, allow_empty: bool = True) -> dict[str, Any]:
    body = parse_json_body(await request.read(), allow_empty=allow_empty)
    if not isinstance(body, dict):
        raise BadRequest(f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def routes(state: "ServerState") -> "RouteList":
    queue, backend, registry = state.queue, state.backend, state.registry

    async def get_prompt(request: web.Request) -> web.Response:
        return web.json_response({"exec_info": {"queue_remaining": queue.remaining()}})

    async def post_prompt(request: web.Request) -> web.Response:
        body = await _json_object(request, allow_empty=False)
        raw = body.get("prompt")
        if raw is None:
            return _prompt_error("no_prompt", "No prompt provided", "No prompt provided")
        extra = body.get("extra_data", {})
        if extra is None:
            extra = {}
        if not isinstance(extra, dict):
            raise BadRequest("'extra_data' must be a JSON object")
        extra = dict(extra)
        client_id = body.get("client_id")
        if client_id is not None:
            if not isinstance(client_id, str):
                raise BadRequest("'client_id' must be a string")
            extra["client_id"] = client_id
        prompt_id = body.get("prompt_id")
        if prompt_id is not None and (not isinstance(prompt_id, str) or not prompt_id or len(prompt_id) > 200):
            raise BadRequest("'prompt_id' must be a non-empty string of at most 200 characters")
        number = body.get("number")
        if number is not None and finite_number(number) is None:
            raise BadRequest("'number' must be a finite number")
        targets = body.get("partial_execution_targets")
        if targets is not None:
            if not isinstance(targets, list) or not all(isinstance(t, (str, int)) and not isinstance(t, bool)
                                                        for t in targets):
                raise BadRequest("'partial_execution_targets' must be a list of node ids")
            targets = [str(t) for t in targets]
        try:
            if looks_like_ui_workflow(raw):  # a convenience: the editor's own format is accepted too
                raw = ui_to_api(raw, registry)
            prompt = normalize_api_prompt(raw)
            validated = validate_prompt(prompt, registry, targets=targets)
        except ValidationError as exc:
            return web.json_response(exc.to_json(), status=400)
        except WorkflowError as exc:
            return _prompt_error("invalid_prompt", str(exc))
        except (RecursionError, TypeError, ValueError, KeyError, AttributeError) as exc:
            log.warning("prompt rejected by an unexpected validation failure: %r", exc)
            return _prompt_error("invalid_prompt", f"the prompt could not be validated: {exc}")
        try:
            item = queue.put(prompt, extra, validated.outputs, prompt_id=prompt_id,
                             number=finite_number(number) if number is not None else None,
                             front=bool(body.get("front")), validated=validated)
        except ValueError as exc:
            raise BadRequest(str(exc), type="duplicate_prompt_id") from None
        return web.json_response({"prompt_id": item.prompt_id, "number": item.number,
                                  "node_errors": validated.node_errors})

    async def get_queue(request: web.Request) -> web.Response:
        running, pending = queue.snapshot()
        body: dict[str, Any] = {"queue_running": [i.as_list() for i in running],
                                "queue_pending": [i.as_list() for i in pending]}
        running_on = {i.prompt_id: i.worker for i in running if i.worker}
        if running_on:  # several workers: which runs what (ComfyUI's items stay 5-arrays)
            body["running_on"] = running_on
        return web.json_response(body, dumps=_dumps)

    async def post_queue(request: web.Request) -> web.Response:
        body = await _json_object(request)
        delete = _id_list(body, "delete")
        if body.get("clear"):
            queue.clear()
        if delete:
            queue.delete(delete)
        return web.Response(status=200)

    async def get_history(request: web.Request) -> web.Response:
        max_items = query_int(request, "max_items", None, minimum=0)
        offset = query_int(request, "offset", -1)
        return web.Response(text=queue.history_json(max_items, offset if offset is not None else -1),
                            content_type="application/json")

    async def get_history_item(request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = queue.history_entry_json(prompt_id)
        text = "{}" if entry is None else "{" + json.dumps(prompt_id) + ":" + entry + "}"
        return web.Response(text=text, content_type="application/json")

    async def post_history(request: web.Request) -> web.Response:
        body = await _json_object(request)
        delete = _id_list(body, "delete")
        if body.get("clear"):
            queue.clear_history()
        if delete:
            queue.delete_history(delete)
        return web.Response(status=200)

    async def post_interrupt(request: web.Request) -> web.Response:
        body = parse_json_body(await request.read(), allow_empty=True)
        prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
        if prompt_id is not None and not isinstance(prompt_id, str):
            raise BadRequest("'prompt_id' must be a string")
        await asyncio.get_running_loop().run_in_executor(None, backend.interrupt, prompt_id)
        return web.Response(status=200)

    async def post_free(request: web.Request) -> web.Response:
        body = await _json_object(request)
        unload, free = bool(body.get("unload_models")), bool(body.get("free_memory"))
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: backend.request_free(unload_models=unload, free_memory=free))
        return web.Response(status=200)

    async def get_jobs(request: web.Request) -> web.Response:
        statuses = {s.strip() for s in request.query.get("status", "").split(",") if s.strip()}
        unknown = statuses - JOB_STATUSES
        if unknown:
            raise BadRequest(f"unknown job status {sorted(unknown)[0]!r}; known: {', '.join(sorted(JOB_STATUSES))}")
        offset = query_int(request, "offset", 0, minimum=0) or 0
        limit = query_int(request, "limit", 100, minimum=1) or 100
        order = request.query.get("sort_order", "desc").lower()
        if order not in ("asc", "desc"):
            raise BadRequest("'sort_order' must be asc or desc")
        jobs = queue.jobs(statuses or None)
        workflow_id = request.query.get("workflow_id")
        if workflow_id:
            jobs = [j for j in jobs if j.get("workflow_id") == workflow_id]
        if request.query.get("sort_by") == "execution_duration":
            jobs.sort(key=lambda j: (j["execution_end_time"] or 0) - (j["execution_start_time"] or 0), reverse=True)
        if order == "asc":
            jobs.reverse()
        page = jobs[offset:offset + limit]
        return web.json_response({"jobs": page, "pagination": {"offset": offset, "limit": limit, "total": len(jobs),
                                                               "has_more": offset + len(page) < len(jobs)}},
                                 dumps=_dumps)

    async def get_job(request: web.Request) -> web.Response:
        job = queue.job(request.match_info["job_id"])
        if job is None:
            raise BadRequest("no such job", status=404, type="not_found")
        return web.json_response(job, dumps=_dumps)

    return [
        ("GET", "/prompt", get_prompt), ("POST", "/prompt", post_prompt),
        ("GET", "/queue", get_queue), ("POST", "/queue", post_queue),
        ("GET", "/history", get_history), ("GET", "/history/{prompt_id}", get_history_item),
        ("POST", "/history", post_history),
        ("POST", "/interrupt", post_interrupt), ("POST", "/free", post_free),
        ("GET", "/jobs", get_jobs), ("GET", "/jobs/{job_id}", get_job),
    ]


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)
