"""Membership: member records, their merge, and failure detection (pure)."""
