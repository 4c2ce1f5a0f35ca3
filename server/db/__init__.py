from server.db.driver import (
    aggregate,
    close_client,
    database,
    in_transaction,
    make_client,
    transaction,
)
from server.db.embedded import EmbeddedDatabase, EmbeddedDatabaseError
from server.db.indexes import ensure_indexes
from server.db.leases import Lease

__all__ = [
    "EmbeddedDatabase",
    "EmbeddedDatabaseError",
    "Lease",
    "aggregate",
    "close_client",
    "database",
    "ensure_indexes",
    "in_transaction",
    "make_client",
    "transaction",
]
