"""The internode transport: authenticated, length-prefixed frames over TCP; payloads opaque.

Imports nothing else of ringkv (the node-id rule is handed in by the caller), and its
modules form a chain with no cycle: ``framing`` < ``handshake`` < ``connection`` < ``stats``
< ``peer`` < ``transport``. Callers use ``ringkv.net.transport.Transport``.
"""
