"""Python client for the ringkv HTTP API: `Client` (sync) and `AsyncClient` (asyncio).

Job: let an application read, write and delete keys on any node without handling
causal contexts by hand, and give it the read-modify-write loop Dynamo applications
need (`update`, the shopping-cart pattern: read, merge siblings, apply, write back with
the read's context, retry when a quorum is not reached).

The package has three parts, and this module re-exports their public names (import
them from here):
- ``ringkv.client.protocol``: the wire as pure functions (`build_*` / `parse_*`, no
  I/O), the errors and `GetResult`;
- ``ringkv.client.update_plan``: `update` as a generator of I/O steps, written once;
- ``ringkv.client.client``: `Client` and `AsyncClient`, which send the requests and
  execute the plan; they differ solely in how a request travels (httpx sync vs async).

The package speaks HTTP only: it imports no other part of ringkv, so an application
needs nothing of the server to use it.

Conventions:
- keys are ``str`` (UTF-8) or ``bytes``, percent-encoded into ``/kv/{key}`` with
  every reserved byte quoted, so any byte string works;
- ``r`` / ``w`` are an int (1..N) or ``"one"``, ``"quorum"``, ``"all"``;
- ``timeout`` is in seconds (float). It is sent to the coordinator as ``?timeout=ms``
  and the HTTP request itself is given one extra second to carry the answer back.
"""

from ringkv.client.client import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from ringkv.client.client import DEFAULT_URL, AsyncClient, Client
from ringkv.client.client import normalize_base_url as normalize_base_url
from ringkv.client.protocol import CONTEXT_HEADER as CONTEXT_HEADER
from ringkv.client.protocol import DEFAULT_CONTENT_TYPE as DEFAULT_CONTENT_TYPE
from ringkv.client.protocol import QUORUM_NAMES as QUORUM_NAMES
from ringkv.client.protocol import TIMEOUT_MARGIN as TIMEOUT_MARGIN
from ringkv.client.protocol import (
    AuthError,
    BadRequestError,
    ConflictError,
    GetResult,
    QuorumError,
    RecordTooLargeError,
    RingkvError,
    ServerError,
    StorageFullError,
    TooManySiblingsError,
    TransportError,
)
from ringkv.client.protocol import HttpRequest as HttpRequest
from ringkv.client.protocol import HttpResponse as HttpResponse
from ringkv.client.protocol import Quorum as Quorum
from ringkv.client.protocol import build_admin as build_admin
from ringkv.client.protocol import build_delete as build_delete
from ringkv.client.protocol import build_get as build_get
from ringkv.client.protocol import build_lookup as build_lookup
from ringkv.client.protocol import build_put as build_put
from ringkv.client.protocol import error_for as error_for
from ringkv.client.protocol import key_bytes as key_bytes
from ringkv.client.protocol import key_path as key_path
from ringkv.client.protocol import parse_delete as parse_delete
from ringkv.client.protocol import parse_get as parse_get
from ringkv.client.protocol import parse_json as parse_json
from ringkv.client.protocol import parse_multipart as parse_multipart
from ringkv.client.protocol import parse_put as parse_put
from ringkv.client.protocol import quorum_param as quorum_param
from ringkv.client.protocol import remove_path as remove_path
from ringkv.client.update_plan import backoff_delay as backoff_delay
from ringkv.client.update_plan import merged_value as merged_value

__all__ = [
    "DEFAULT_URL",
    "AsyncClient",
    "AuthError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "GetResult",
    "QuorumError",
    "RecordTooLargeError",
    "RingkvError",
    "ServerError",
    "StorageFullError",
    "TooManySiblingsError",
    "TransportError",
]
