"""Typed records and the rules they share: one home for every field check.

``fields``: the declarative field-spec validator (numbers, strings, lists,
nested tables, exact key sets, defaults) that manifests, reports and the TOML
configs parse their untrusted input with.
"""
