"""Python client for the ringkv HTTP API: `Client` (sync) and `AsyncClient` (asyncio).

Job: let an application read, write and delete keys on any node without handling
causal contexts by hand, give it the read-modify-write loop Dynamo applications need
(`update`, the shopping-cart pattern: read, merge siblings, apply, write back with
the read's context, retry when a quorum is not reached), the convergent counters and
sets, buckets, key listing and multi-get, conditional writes, failover between
nodes (``Client(urls=[...])``), and the security a node may ask for: ``https://``
verified against the cluster CA (``ca=``), a client certificate (``cert=``,
``key=``) and a client token on every request (``token=``).

The package's parts, whose public names this module re-exports (import them from here):
- ``ringkv.client.protocol``: the key-value wire as pure functions (`build_*` /
  `parse_*`, no I/O) and `GetResult`; ``ringkv.client.datatypes`` (counters, sets,
  `SetResult`) and ``ringkv.client.buckets`` (properties, listing, multi-get,
  `MGetResult`) in the same shape;
- ``ringkv.client.errors``: the exceptions and which answer stands for which;
- ``ringkv.client.failover``: which node a request goes to and whether it may be sent
  again, as one pure policy;
- ``ringkv.client.plans``: every operation, written once, as a plan -- a generator
  yielding the requests it needs and given their answers -- the multi-step ones
  included (`srem` reading first, the key listing following its cursor);
  ``ringkv.client.update_plan``: `update` (read, merge, write back, retry) as one;
- ``ringkv.client.runner``: a plan's requests over the nodes, through the failover
  policy, as attempts and pauses;
- ``ringkv.client.client`` / ``ringkv.client.async_client``: `Client` and
  `AsyncClient`, whose methods are one line each, running a plan; they differ solely
  in how an attempt travels and a pause is slept (httpx sync vs async).

The package speaks HTTP only: it imports no other part of ringkv, so an application
needs nothing of the server to use it.

Conventions:
- keys are ``str`` (UTF-8) or ``bytes``, percent-encoded into ``/kv/{key}`` with
  every reserved byte quoted, so any byte string works; keys a node lists come back
  as ``str`` when they are UTF-8, else ``bytes``;
- ``bucket`` None is the plain paths (bucket ``default``), a name ``/buckets/{name}/``;
- ``r`` / ``w`` are an int (1..N) or ``"one"``, ``"quorum"``, ``"all"``;
- ``timeout`` is in seconds (float). It is sent to the coordinator as ``?timeout=ms``
  and the HTTP request itself is given one extra second to carry the answer back.
"""

from ringkv.client.async_client import AsyncClient
from ringkv.client.buckets import MGetResult
from ringkv.client.buckets import build_bucket_props as build_bucket_props
from ringkv.client.buckets import build_keys_page as build_keys_page
from ringkv.client.buckets import build_mget as build_mget
from ringkv.client.buckets import build_set_bucket_props as build_set_bucket_props
from ringkv.client.buckets import decode_key as decode_key
from ringkv.client.buckets import parse_bucket_props as parse_bucket_props
from ringkv.client.buckets import parse_keys_page as parse_keys_page
from ringkv.client.buckets import parse_mget as parse_mget
from ringkv.client.client import Client
from ringkv.client.datatypes import SetResult
from ringkv.client.datatypes import build_counter as build_counter
from ringkv.client.datatypes import build_incr as build_incr
from ringkv.client.datatypes import build_set_update as build_set_update
from ringkv.client.datatypes import build_smembers as build_smembers
from ringkv.client.datatypes import check_idempotency_key as check_idempotency_key
from ringkv.client.datatypes import elements_of as elements_of
from ringkv.client.datatypes import parse_counter as parse_counter
from ringkv.client.datatypes import parse_smembers as parse_smembers
from ringkv.client.errors import (
    AuthError,
    BadRequestError,
    ConflictError,
    LimitExceededError,
    PreconditionFailedError,
    QuorumError,
    RecordTooLargeError,
    RingkvError,
    ServerError,
    StorageFullError,
    TooManySiblingsError,
    TransportError,
)
from ringkv.client.errors import error_for as error_for
from ringkv.client.failover import Failover as Failover
from ringkv.client.failover import Failure as Failure
from ringkv.client.failover import Resend as Resend
from ringkv.client.failover import RetryPolicy
from ringkv.client.protocol import CONTEXT_HEADER as CONTEXT_HEADER
from ringkv.client.protocol import DEFAULT_BUCKET as DEFAULT_BUCKET
from ringkv.client.protocol import DEFAULT_CONTENT_TYPE as DEFAULT_CONTENT_TYPE
from ringkv.client.protocol import QUORUM_NAMES as QUORUM_NAMES
from ringkv.client.protocol import TIMEOUT_MARGIN as TIMEOUT_MARGIN
from ringkv.client.protocol import GetResult
from ringkv.client.protocol import HttpRequest as HttpRequest
from ringkv.client.protocol import HttpResponse as HttpResponse
from ringkv.client.protocol import Quorum as Quorum
from ringkv.client.protocol import bucket_name as bucket_name
from ringkv.client.protocol import build_admin as build_admin
from ringkv.client.protocol import build_delete as build_delete
from ringkv.client.protocol import build_get as build_get
from ringkv.client.protocol import build_lookup as build_lookup
from ringkv.client.protocol import build_put as build_put
from ringkv.client.protocol import etag_header as etag_header
from ringkv.client.protocol import key_bytes as key_bytes
from ringkv.client.protocol import key_path as key_path
from ringkv.client.protocol import parse_delete as parse_delete
from ringkv.client.protocol import parse_get as parse_get
from ringkv.client.protocol import parse_json as parse_json
from ringkv.client.protocol import parse_multipart as parse_multipart
from ringkv.client.protocol import parse_put as parse_put
from ringkv.client.protocol import quorum_param as quorum_param
from ringkv.client.protocol import remove_path as remove_path
from ringkv.client.transport import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from ringkv.client.transport import DEFAULT_URL
from ringkv.client.transport import bearer_token as bearer_token
from ringkv.client.transport import normalize_base_url as normalize_base_url
from ringkv.client.transport import tls_context as tls_context
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
    "LimitExceededError",
    "MGetResult",
    "PreconditionFailedError",
    "QuorumError",
    "RecordTooLargeError",
    "RetryPolicy",
    "RingkvError",
    "ServerError",
    "SetResult",
    "StorageFullError",
    "TooManySiblingsError",
    "TransportError",
]
