"""Storage: versions of a key (dotted version vectors), the on-disk record, engines."""
