"""Conformance cases not yet matched, with the reason. Each entry is an xfail(strict=True): when a case
starts passing, its test fails until the entry is removed here."""
PENDING: dict[str, str] = {
}
