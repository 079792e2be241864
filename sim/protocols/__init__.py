"""Small built-in protocols: a single-copy store and an M/M/c service queue, and request forwarding."""
