"""The job stores: one protocol, SQLite (embedded) and Redis Streams (distributed) behind it."""
