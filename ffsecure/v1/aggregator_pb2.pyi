from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetFederationInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FederationInfo(_message.Message):
    __slots__ = ("signed_manifest", "crl_pem", "peer_site_id", "max_chunk_bytes", "max_upload_bytes")
    SIGNED_MANIFEST_FIELD_NUMBER: _ClassVar[int]
    CRL_PEM_FIELD_NUMBER: _ClassVar[int]
    PEER_SITE_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_UPLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    signed_manifest: bytes
    crl_pem: bytes
    peer_site_id: str
    max_chunk_bytes: int
    max_upload_bytes: int
    def __init__(self, signed_manifest: _Optional[bytes] = ..., crl_pem: _Optional[bytes] = ..., peer_site_id: _Optional[str] = ..., max_chunk_bytes: _Optional[int] = ..., max_upload_bytes: _Optional[int] = ...) -> None: ...

class GetUploadStatusRequest(_message.Message):
    __slots__ = ("upload_id",)
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    def __init__(self, upload_id: _Optional[str] = ...) -> None: ...

class UploadStatus(_message.Message):
    __slots__ = ("upload_id", "state", "committed_offset", "total_size", "total_sha256", "receipt", "max_chunk_bytes")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[UploadStatus.State]
        UNKNOWN: _ClassVar[UploadStatus.State]
        IN_PROGRESS: _ClassVar[UploadStatus.State]
        REGISTERED: _ClassVar[UploadStatus.State]
        DELETED: _ClassVar[UploadStatus.State]
    STATE_UNSPECIFIED: UploadStatus.State
    UNKNOWN: UploadStatus.State
    IN_PROGRESS: UploadStatus.State
    REGISTERED: UploadStatus.State
    DELETED: UploadStatus.State
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SHA256_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    state: UploadStatus.State
    committed_offset: int
    total_size: int
    total_sha256: bytes
    receipt: Receipt
    max_chunk_bytes: int
    def __init__(self, upload_id: _Optional[str] = ..., state: _Optional[_Union[UploadStatus.State, str]] = ..., committed_offset: _Optional[int] = ..., total_size: _Optional[int] = ..., total_sha256: _Optional[bytes] = ..., receipt: _Optional[_Union[Receipt, _Mapping]] = ..., max_chunk_bytes: _Optional[int] = ...) -> None: ...

class UploadChunk(_message.Message):
    __slots__ = ("upload_id", "offset", "data", "total_size", "total_sha256")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SHA256_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    offset: int
    data: bytes
    total_size: int
    total_sha256: bytes
    def __init__(self, upload_id: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., total_size: _Optional[int] = ..., total_sha256: _Optional[bytes] = ...) -> None: ...

class Receipt(_message.Message):
    __slots__ = ("module_id", "index", "entry", "tree_size", "checkpoint", "inclusion_proof", "existing")
    MODULE_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    INCLUSION_PROOF_FIELD_NUMBER: _ClassVar[int]
    EXISTING_FIELD_NUMBER: _ClassVar[int]
    module_id: str
    index: int
    entry: bytes
    tree_size: int
    checkpoint: str
    inclusion_proof: _containers.RepeatedScalarFieldContainer[bytes]
    existing: bool
    def __init__(self, module_id: _Optional[str] = ..., index: _Optional[int] = ..., entry: _Optional[bytes] = ..., tree_size: _Optional[int] = ..., checkpoint: _Optional[str] = ..., inclusion_proof: _Optional[_Iterable[bytes]] = ..., existing: _Optional[bool] = ...) -> None: ...

class GetCheckpointRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ("note", "tree_size")
    NOTE_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    note: str
    tree_size: int
    def __init__(self, note: _Optional[str] = ..., tree_size: _Optional[int] = ...) -> None: ...

class GetInclusionProofRequest(_message.Message):
    __slots__ = ("index", "tree_size")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    index: int
    tree_size: int
    def __init__(self, index: _Optional[int] = ..., tree_size: _Optional[int] = ...) -> None: ...

class InclusionProof(_message.Message):
    __slots__ = ("index", "tree_size", "hashes", "entry")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    index: int
    tree_size: int
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    entry: bytes
    def __init__(self, index: _Optional[int] = ..., tree_size: _Optional[int] = ..., hashes: _Optional[_Iterable[bytes]] = ..., entry: _Optional[bytes] = ...) -> None: ...

class GetConsistencyProofRequest(_message.Message):
    __slots__ = ("old_size", "new_size")
    OLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    NEW_SIZE_FIELD_NUMBER: _ClassVar[int]
    old_size: int
    new_size: int
    def __init__(self, old_size: _Optional[int] = ..., new_size: _Optional[int] = ...) -> None: ...

class ConsistencyProof(_message.Message):
    __slots__ = ("old_size", "new_size", "hashes")
    OLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    NEW_SIZE_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    old_size: int
    new_size: int
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, old_size: _Optional[int] = ..., new_size: _Optional[int] = ..., hashes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class DeletionRequest(_message.Message):
    __slots__ = ("module_ids", "reason")
    MODULE_IDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    module_ids: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    def __init__(self, module_ids: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ...) -> None: ...

class LedgerEntry(_message.Message):
    __slots__ = ("index", "entry")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    index: int
    entry: bytes
    def __init__(self, index: _Optional[int] = ..., entry: _Optional[bytes] = ...) -> None: ...

class DeletionReply(_message.Message):
    __slots__ = ("entries", "checkpoint")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[LedgerEntry]
    checkpoint: Checkpoint
    def __init__(self, entries: _Optional[_Iterable[_Union[LedgerEntry, _Mapping]]] = ..., checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ...) -> None: ...

class GetClassifierRequest(_message.Message):
    __slots__ = ("classifier_id",)
    CLASSIFIER_ID_FIELD_NUMBER: _ClassVar[int]
    classifier_id: str
    def __init__(self, classifier_id: _Optional[str] = ...) -> None: ...

class ClassifierInfo(_message.Message):
    __slots__ = ("classifier_id", "sha256", "size", "config", "dataset_id", "module_ids", "trained_index", "trained_entry", "published_index", "published")
    CLASSIFIER_ID_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    MODULE_IDS_FIELD_NUMBER: _ClassVar[int]
    TRAINED_INDEX_FIELD_NUMBER: _ClassVar[int]
    TRAINED_ENTRY_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_INDEX_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    classifier_id: str
    sha256: str
    size: int
    config: bytes
    dataset_id: str
    module_ids: _containers.RepeatedScalarFieldContainer[str]
    trained_index: int
    trained_entry: bytes
    published_index: int
    published: bool
    def __init__(self, classifier_id: _Optional[str] = ..., sha256: _Optional[str] = ..., size: _Optional[int] = ..., config: _Optional[bytes] = ..., dataset_id: _Optional[str] = ..., module_ids: _Optional[_Iterable[str]] = ..., trained_index: _Optional[int] = ..., trained_entry: _Optional[bytes] = ..., published_index: _Optional[int] = ..., published: _Optional[bool] = ...) -> None: ...

class ClassifierChunk(_message.Message):
    __slots__ = ("info", "data")
    INFO_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    info: ClassifierInfo
    data: bytes
    def __init__(self, info: _Optional[_Union[ClassifierInfo, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ClassRecall(_message.Message):
    __slots__ = ("recall",)
    RECALL_FIELD_NUMBER: _ClassVar[int]
    recall: float
    def __init__(self, recall: _Optional[float] = ...) -> None: ...

class EvaluationReport(_message.Message):
    __slots__ = ("classifier_id", "n_test", "accuracy", "macro_auroc", "per_class_recall", "confusion")
    CLASSIFIER_ID_FIELD_NUMBER: _ClassVar[int]
    N_TEST_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    MACRO_AUROC_FIELD_NUMBER: _ClassVar[int]
    PER_CLASS_RECALL_FIELD_NUMBER: _ClassVar[int]
    CONFUSION_FIELD_NUMBER: _ClassVar[int]
    classifier_id: str
    n_test: int
    accuracy: float
    macro_auroc: float
    per_class_recall: _containers.RepeatedCompositeFieldContainer[ClassRecall]
    confusion: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, classifier_id: _Optional[str] = ..., n_test: _Optional[int] = ..., accuracy: _Optional[float] = ..., macro_auroc: _Optional[float] = ..., per_class_recall: _Optional[_Iterable[_Union[ClassRecall, _Mapping]]] = ..., confusion: _Optional[_Iterable[int]] = ...) -> None: ...

class EvaluationReceipt(_message.Message):
    __slots__ = ("classifier_id", "salt", "index", "entry", "tree_size", "checkpoint", "inclusion_proof", "existing")
    CLASSIFIER_ID_FIELD_NUMBER: _ClassVar[int]
    SALT_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    INCLUSION_PROOF_FIELD_NUMBER: _ClassVar[int]
    EXISTING_FIELD_NUMBER: _ClassVar[int]
    classifier_id: str
    salt: str
    index: int
    entry: bytes
    tree_size: int
    checkpoint: str
    inclusion_proof: _containers.RepeatedScalarFieldContainer[bytes]
    existing: bool
    def __init__(self, classifier_id: _Optional[str] = ..., salt: _Optional[str] = ..., index: _Optional[int] = ..., entry: _Optional[bytes] = ..., tree_size: _Optional[int] = ..., checkpoint: _Optional[str] = ..., inclusion_proof: _Optional[_Iterable[bytes]] = ..., existing: _Optional[bool] = ...) -> None: ...

class ErrorDetail(_message.Message):
    __slots__ = ("code", "message", "hint")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    hint: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., hint: _Optional[str] = ...) -> None: ...
