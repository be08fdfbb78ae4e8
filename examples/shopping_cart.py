"""Shopping cart: concurrent shoppers add to one cart; conflicting versions merge by union.

This is the Dynamo paper's own example. A cart is a JSON list of item names. Every
shopper adds items with `update()`: read the cart, merge any siblings (concurrent
versions written by shoppers who did not see each other's writes) with a set union,
add one item, and write back with the read's context so the write supersedes exactly
what was merged. Shoppers go through different nodes at the same time, so siblings
do appear; no added item is ever lost.

Usage (against a local cluster):

    ringkv dev-cluster                       # in another terminal: 5 nodes, 8001..8005
    python examples/shopping_cart.py
    python examples/shopping_cart.py --node http://127.0.0.1:8001 \\
        --node http://127.0.0.1:8003 --shoppers 8 --items 5 --cart cart:alice

Options: --node URL (repeatable; shoppers are spread over the nodes; default
http://127.0.0.1:8001), --shoppers K (default 4), --items M per shopper (default 5),
--cart KEY (default: a fresh key per run), --set (the cart as a ringkv set). Exits 0
when the final cart holds every item added (and, with --set, none removed), 1
otherwise, 2 when the cluster cannot be reached.

Caveat (also from the paper): a union merge cannot express removals -- an item
removed on one side of a conflict comes back from the other. With --set the cart is
instead a ringkv set (`/sets/{cart}`, an add-wins observed-remove set): shoppers add
with `sadd`, and each then takes its first item out again with `srem`, which removes
exactly what its read observed. No client-side merge, no sibling, and a removed item
stays removed: the final cart must hold every item added and none removed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path

try:
    from ringkv.client import AsyncClient, RingkvError
except ImportError:  # running from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from ringkv.client import AsyncClient, RingkvError


def decode(value: bytes | None) -> set[str]:
    return set(json.loads(value)) if value else set()


def encode(items: set[str]) -> bytes:
    return json.dumps(sorted(items)).encode()


class Merger:
    """Set-union merge of siblings, counting how many conflicts it resolved."""

    def __init__(self) -> None:
        self.conflicts = 0

    def __call__(self, siblings: list[bytes]) -> bytes:
        self.conflicts += 1
        merged: set[str] = set()
        for sibling in siblings:
            merged |= decode(sibling)
        return encode(merged)


async def shopper(
    name: str, node: str, cart: str, items: int, merge: Merger, log: list[str]
) -> set[str]:
    added: set[str] = set()
    async with AsyncClient(node) as kv:
        for j in range(1, items + 1):
            item = f"{name}-item{j}"

            def add(current: bytes | None, item: str = item) -> bytes:
                return encode(decode(current) | {item})

            await kv.update(cart, add, merge=merge, content_type="application/json")
            added.add(item)
            log.append(f"{name} (via {node}) added {item}")
            await asyncio.sleep(0)  # let the other shoppers interleave
    return added


async def set_shopper(
    name: str, node: str, cart: str, items: int, log: list[str]
) -> tuple[set[str], set[str]]:
    """Add `items` items to the set cart, then take the first one out again."""
    added: set[str] = set()
    async with AsyncClient(node) as kv:
        for j in range(1, items + 1):
            item = f"{name}-item{j}"
            await kv.sadd(cart, item)
            added.add(item)
            log.append(f"{name} (via {node}) added {item}")
            await asyncio.sleep(0)
        first = f"{name}-item1"
        await kv.srem(cart, first)  # reads the set, removes exactly what it observed
        log.append(f"{name} (via {node}) removed {first}")
    return added, {first}


async def main_set(args: argparse.Namespace, cart: str, nodes: list[str]) -> int:
    log: list[str] = []
    print(f"{args.shoppers} shoppers x {args.items} items -> set cart {cart!r}")
    results = await asyncio.gather(
        *(
            set_shopper(f"shopper{i}", nodes[i % len(nodes)], cart, args.items, log)
            for i in range(1, args.shoppers + 1)
        )
    )
    added = set().union(*(a for a, _ in results))
    removed = set().union(*(r for _, r in results))
    if args.verbose:
        print("\n".join(log))
    async with AsyncClient(nodes[0]) as kv:
        final = set((await kv.smembers(cart)).elements)
    print(f"final cart ({len(final)} items):")
    for item in sorted(final):
        print(f"  {item}")
    missing, back = (added - removed) - final, final & removed
    if missing or back:
        print(f"LOST {sorted(missing)}; REMOVED BUT BACK {sorted(back)}", file=sys.stderr)
        return 1
    print(f"all {len(added - removed)} kept items are in the cart, all {len(removed)}"
          " removed ones are gone")
    return 0


async def main_async(args: argparse.Namespace) -> int:
    cart = args.cart or f"cart:{uuid.uuid4().hex[:8]}"
    merge = Merger()
    log: list[str] = []
    nodes: list[str] = args.node or ["http://127.0.0.1:8001"]
    try:
        async with AsyncClient(nodes[0]) as kv:
            await kv.health()
    except RingkvError as exc:
        print(
            f"cannot use {nodes[0]}: {exc}\nstart a cluster with: ringkv dev-cluster",
            file=sys.stderr,
        )
        return 2

    if args.set:
        return await main_set(args, cart, nodes)
    print(f"{args.shoppers} shoppers x {args.items} items -> cart {cart!r}")
    results = await asyncio.gather(
        *(
            shopper(f"shopper{i}", nodes[i % len(nodes)], cart, args.items, merge, log)
            for i in range(1, args.shoppers + 1)
        )
    )
    expected = set().union(*results)
    if args.verbose:
        print("\n".join(log))

    async with AsyncClient(nodes[0]) as kv:
        got = await kv.get(cart)
        if got.conflict:
            print(f"final read found {len(got.values)} siblings; merging them")
            await kv.update(cart, lambda current: current or encode(set()), merge=merge)
            got = await kv.get(cart)
    final = decode(got.value)

    print(f"siblings merged along the way: {merge.conflicts}")
    print(f"final cart ({len(final)} items):")
    for item in sorted(final):
        print(f"  {item}")
    missing = expected - final
    if missing:
        print(f"LOST {len(missing)} item(s): {', '.join(sorted(missing))}", file=sys.stderr)
        return 1
    print(f"all {len(expected)} items are in the cart")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--node", action="append", metavar="URL", help="a node's HTTP address (repeatable)"
    )
    parser.add_argument("--shoppers", type=int, default=4, metavar="K")
    parser.add_argument("--items", type=int, default=5, metavar="M", help="items per shopper")
    parser.add_argument("--cart", default=None, metavar="KEY", help="cart key [fresh]")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every addition")
    parser.add_argument("--set", action="store_true",
                        help="keep the cart as a ringkv set (add and remove, no merging)")
    args = parser.parse_args()
    if args.shoppers < 1 or args.items < 1:
        parser.error("--shoppers and --items must be at least 1")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
