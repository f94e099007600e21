"""Go to a job by its id from any page (the box in the top bar): the server looks the id up
in every queue under the prefix, one round trip, and redirects to the job's page; an id held
by several queues gets a list of them, an id held by none a one-line answer."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from ..context import mail_of, page_context
from ..render import job_url, render

MAX_ID_CHARS = 1000


def _wanted(request: Request) -> str:
    return (request.query_params.get("id") or "").strip()[:MAX_ID_CHARS]


async def _lookup(request: Request, job_id: str) -> tuple[list[str], int]:
    mail = mail_of(request)
    queues = await mail.queues.list_queues()
    return await mail.queues.find_job(job_id, queues), len(queues)


async def find_job(request: Request) -> Response:
    job_id = _wanted(request)
    found, searched = await _lookup(request, job_id) if job_id else ([], 0)
    if len(found) == 1:
        url = job_url({"request": request}, found[0], job_id)
        return RedirectResponse(url, status_code=303)
    context = await page_context(request, "overview")
    links = [{"queue": q, "url": job_url({"request": request}, q, job_id)} for q in found]
    # An id not found stays in the top bar's box, to be corrected (base.html).
    context.update(job_id=job_id, found=links, searched=searched,
                   find_not_found=job_id if not found else "")
    return render(request, "pages/find_job.html", context,
                  status_code=200 if found or not job_id else 404)


async def api_find_job(request: Request) -> Response:
    job_id = _wanted(request)
    if not job_id:  # like the page without an id: how to ask (every reading route is 200/404)
        return JSONResponse({"id": "", "queues": [], "searched": 0, "urls": [],
                             "message": "Give a job id: ?id=..."})
    found, searched = await _lookup(request, job_id)
    return JSONResponse(
        {"id": job_id, "queues": found, "searched": searched,
         "urls": [job_url({"request": request}, q, job_id) for q in found]},
        status_code=200 if found else 404)
