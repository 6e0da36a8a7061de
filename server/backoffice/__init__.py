"""The back office: an operator's API (``/admin/api``, JSON, keys from ``CROUPIER_ADMIN_KEYS``) and the
``croupier`` commands that do the same through the same code (docs/operations.md, "Back office").

One concept per module: :mod:`.keys` (admin keys, scopes, the constant-time check), :mod:`.audit` (the
``admin_actions`` log), :mod:`.control` (the channel to every node: close a user's sockets, announce,
report), the operations shared by the API and the commands (:mod:`.accounts`: profile, block, unblock;
:mod:`.money`: adjustments once per key; :mod:`.rounds`: list, inspect, void through the driving node;
:mod:`.publish`: announcements; :mod:`.cluster`: nodes, drivers, the outbox; :mod:`.risk`: risk flags listed
and reviewed), :mod:`.office` (what a node gives the back office, and its part of the node's life),
:mod:`.http` (keys first, JSON in and out), :mod:`.routes` (one module per resource) and :mod:`.commands`
(``croupier user``, ``round``, ``risk flags|review``, ``credit --key``).
"""

from __future__ import annotations

from .keys import AdminKey, KeyRing, Scope, key_digest
from .office import Office, OfficeNode, back_office
from .routes import admin_routes

__all__ = ["AdminKey", "KeyRing", "Office", "OfficeNode", "Scope", "admin_routes", "back_office", "key_digest"]
