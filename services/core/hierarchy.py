"""The target hierarchy as plain data: nodes are ``'Type:id'`` strings, chains run from a node up.

A chain starts with the node itself (``['TicketNote:9', 'Ticket:42', 'Project:7']``), so
"everything under Ticket:42" and "everything on Ticket:42" are the same GIN probe,
``ancestors @> '{Ticket:42}'``.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.core.errors import bad_request

MAX_DEPTH = 32


def node(target_type: str, target_id: str) -> str:
    return f"{target_type}:{target_id}"


def chain_under(own: str, parent_chain: Sequence[str], *, field: str = "parent") -> list[str]:
    """The chain of ``own`` when it hangs under the node whose chain is ``parent_chain``."""
    if own in parent_chain:
        raise bad_request("cycle", f"{own} cannot be placed under its own descendant {parent_chain[0]}", field)
    if len(parent_chain) + 1 > MAX_DEPTH:
        raise bad_request("too_deep", f"targets nest at most {MAX_DEPTH} levels deep", field)
    return [own, *parent_chain]
