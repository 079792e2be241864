"""Replication protocols: primary-backup, quorums, eventual consistency, Raft."""
