"""Which replica owns which environment: rendezvous (highest-random-weight) hashing. PURE.

Contract:
* ``owner(environment, replicas)``: the live replica with the highest weight
  ``blake2b(replica NUL environment)``; None without replicas. Every replica computes the
  same answer from the same member list, with no coordination and no shared counter.
* ``assignment(environments, replicas)``: ``environment -> owner`` for all of them.
* When a replica joins, only the environments it now wins move (to it); when one leaves,
  only its environments move, each to its runner-up. Nothing else is reshuffled, so a
  re-balance interrupts as few rollouts as possible. With E environments over R replicas each
  gets about E/R (hash spread, not a guarantee: 6 over 3 may be 3/2/1).
* Hashing says who *should* own an environment; the lease (``record.Leases``) says who
  *does*. A replica acquires only the environments it should own, releases the ones it
  should no longer own once idle, and takes over a lapsed lease of any environment it
  should own: ownership converges to the assignment, and correctness never depends on the
  member lists agreeing (the fencing token does that).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["assignment", "owner", "weight"]


def weight(replica: str, environment: str) -> int:
    """The rendezvous weight of ``replica`` for ``environment`` (64 bits)."""
    digest = hashlib.blake2b(f"{replica}\0{environment}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(environment: str, replicas: Iterable[str]) -> str | None:
    """The replica that should own ``environment`` (ties: the smaller name); None: nobody."""
    best: tuple[int, str] | None = None
    for replica in replicas:
        key = (weight(replica, environment), replica)
        if best is None or key[0] > best[0] or (key[0] == best[0] and replica < best[1]):
            best = key
    return best[1] if best else None


def assignment(environments: Iterable[str], replicas: Iterable[str]) -> dict[str, str | None]:
    """``environment -> owner`` (see ``owner``)."""
    members = sorted(set(replicas))
    return {environment: owner(environment, members) for environment in environments}
