"""Merkle-tree anti-entropy: trees, range bookkeeping and messages (pure)."""
