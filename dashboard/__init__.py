"""The web dashboard: a Starlette app that reads and operates queues through mailqueue."""
