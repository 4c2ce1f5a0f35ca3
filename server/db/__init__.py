from server.db.driver import aggregate, close_client, database, make_client, transaction
from server.db.embedded import EmbeddedDatabase, EmbeddedDatabaseError
from server.db.indexes import ensure_indexes

__all__ = [
    "EmbeddedDatabase",
    "EmbeddedDatabaseError",
    "aggregate",
    "close_client",
    "database",
    "ensure_indexes",
    "make_client",
    "transaction",
]
