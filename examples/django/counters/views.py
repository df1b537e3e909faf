"""A list view and a read-modify-write view written the naive way.

``increment`` reads the counter, adds one in Python and saves it, inside ``atomic()``,
with no ``F()`` and no ``select_for_update``: correct only if no other worker can write
between the read and the write, which is what the write turn provides.
"""

import logging
import os
import time

from django.db import OperationalError, transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .models import Counter

log = logging.getLogger("counters")
MAX_HOLD_SECONDS = 60.0


def _worker(response: JsonResponse) -> JsonResponse:
    response["X-Worker-Pid"] = str(os.getpid())
    return response


@require_GET
def counter_list(request: HttpRequest) -> JsonResponse:
    rows = list(Counter.objects.order_by("name").values("name", "value"))
    return _worker(JsonResponse({"counters": rows}))


@csrf_exempt
@require_POST
def increment(request: HttpRequest, name: str) -> JsonResponse:
    """``?work_ms=`` stands for the view's own work inside the transaction (rendering,
    a call to another service): the time the write lock is held without the CPU."""
    try:
        work = min(float(request.GET.get("work_ms", "0")), 1000.0) / 1000
    except ValueError:
        return JsonResponse({"error": "work_ms must be a number"}, status=400)
    try:
        with transaction.atomic():
            counter, _ = Counter.objects.get_or_create(name=name)
            counter.value = counter.value + 1
            if work > 0:
                time.sleep(work)
            counter.save()
    except OperationalError as exc:  # "database is locked" on the stock backend
        return _worker(JsonResponse({"error": str(exc)}, status=503))
    return _worker(JsonResponse({"name": name, "value": counter.value}))


@csrf_exempt
@require_POST
def hold(request: HttpRequest, name: str) -> JsonResponse:
    """Add 1000 to the counter, then sleep ``?seconds=`` inside the transaction before
    committing: what a slow or stuck worker looks like (kill it and the 1000 is gone)."""
    try:
        seconds = min(float(request.GET.get("seconds", "1")), MAX_HOLD_SECONDS)
    except ValueError:
        return JsonResponse({"error": "seconds must be a number"}, status=400)
    with transaction.atomic():
        counter, _ = Counter.objects.get_or_create(name=name)
        counter.value = counter.value + 1000
        counter.save()
        log.info("worker %d holds the write turn for %.1f s", os.getpid(), seconds)
        time.sleep(seconds)
    return _worker(JsonResponse({"name": name, "value": counter.value}))
