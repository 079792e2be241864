"""The message-broker model and the messaging patterns built on it."""
