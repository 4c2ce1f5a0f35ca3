from server.db.driver import aggregate, close_client, database, make_client, transaction
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
    "make_client",
    "transaction",
]
