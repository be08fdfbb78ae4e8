"""ringkv: a Dynamo-style, eventually consistent, sharded key-value store."""

__version__ = "0.1.0"
