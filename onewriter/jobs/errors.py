"""The queue's own errors, beside the write path's codes (same root, same mapping to HTTP)."""

from __future__ import annotations

from ..errors import OneWriterError


class LeaseLost(OneWriterError):
    """The lease token no longer holds this job (it expired and the job was re-claimed, or
    the job is finished): a worker can never complete a job it does not hold."""

    code = "LEASE_LOST"
    http_status = 409


class JobNotFound(OneWriterError):
    """No job has that id (it may have been pruned)."""

    code = "NOT_FOUND"
    http_status = 404


class JobCancelled(OneWriterError):
    """The job was cancelled while its worker ran it: the worker should stop (the runner
    stops the handler); the job has ended as ``cancelled`` and its result is dropped."""

    code = "CANCELLED"
    http_status = 409


class UnsupportedMediaType(OneWriterError):
    """The HTTP service reads JSON bodies only (``Content-Type: application/json``)."""

    code = "UNSUPPORTED_MEDIA_TYPE"
    http_status = 415
