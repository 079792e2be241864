"""Small built-in protocols: a single-copy store and an M/M/c service queue, request forwarding, and the
duplicate table that servers honouring idempotency keys share."""
