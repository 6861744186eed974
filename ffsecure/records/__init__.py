"""Records: the one home of every shape that crosses a trust boundary or a process.

Each record is parsed once, at the edge, into a frozen dataclass (or a checked
``NewType`` string) and passed on as that record, never as a loose dict:

* :mod:`ffsecure.records.ids`: every id rule (module, site, federation,
  artifact, upload, key, SHA-256, actor, host, port, tree size) and the
  ``SiteId`` / ``ModuleId`` / ``ArtifactId`` / ``Sha256Hex`` types;
* :mod:`ffsecure.records.entries`: the ledger entry format (canonical JSON,
  the rules every entry obeys), :class:`~ffsecure.records.entries.EntryType`
  and one frozen dataclass per entry type, parsed by ``parse_entry``;
* :mod:`ffsecure.records.lineage`: a dataset's or classifier's lineage, inline
  or committed to a lineage document by count and SHA-256, and
  ``resolve_lineage``, the one reader of either form;
* :mod:`ffsecure.records.receipts`: the receipt that proves an entry is in the
  log (upload and evaluation), in its kept JSON form and its protobuf form;
* :mod:`ffsecure.records.wire`: the gRPC contract both sides share beyond the
  ``.proto`` files: trailing-metadata keys and which statuses a client retries;
* :mod:`ffsecure.records.fields`: the declarative field-spec validator (numbers,
  strings, lists, nested tables, exact key sets, defaults) that manifests,
  reports and the TOML configs parse their untrusted input with.

Layering: records import only the standard library, ``ffsecure.errors``,
``ffsecure.canonical``, the generated ``ffsecure.v1`` messages and ``grpc``;
everything else imports records. This module imports no submodule, so that
reading an id rule does not load gRPC.
"""
