"""Write commands run from Python: ``bulk_write``, unacknowledged writes, and the few writes the Rust
driver refuses but pymongo leaves to the server (documents between 16 MiB and 16 MiB + 16 KiB).

This follows pymongo's bulk API (``pymongo/bulk_shared.py`` and ``pymongo/synchronous/bulk.py``): requests
are grouped into runs of ``insert``/``update``/``delete`` commands (consecutive runs when ordered, one run
per kind when unordered), each run is split into batches, and the server replies are merged into pymongo's
``bulk_api_result`` layout, with error indexes mapped back to the caller's request list.

Each command is sent as one BSON document (not an OP_MSG document sequence as pymongo does), so batches
are capped at the server's command-size limit (16 MiB + 16 KiB) rather than pymongo's 48 MB message. The
results are the same; only the number of round trips differs. As in pymongo, an acknowledged bulk without
multi-document ops (``UpdateMany``, ``DeleteMany``) is a retryable write: each command goes through the
core's ``retryable_write`` op, which numbers it and retries it once after a network error or a failover.
Given an explicit session, the commands run in it (and in its transaction, if one is open) and are not
retried: the driver keeps a session's transaction numbers to itself.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, NoReturn

from bson import ObjectId
from bson.raw_bson import RawBSONDocument
from pymongo.common import validate_is_document_type, validate_ok_for_replace, validate_ok_for_update
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    DocumentTooLarge,
    DuplicateKeyError,
    InvalidOperation,
    OperationFailure,
    WriteError,
)
from pymongo.helpers_shared import _RETRYABLE_ERROR_CODES
from pymongo.write_concern import WriteConcern

from ._calls import Operation
from ._common import MAX_BSON_SIZE, codec_for_replies, encode, write_concern_document, write_concern_error

if TYPE_CHECKING:
    from ._collection_writes import CollectionWrites

    # Either session class: the async classes run these same operations with an AsyncClientSession.
    from .session import _Session as ClientSession

INSERT, UPDATE, DELETE = 0, 1, 2
_COMMANDS = ("insert", "update", "delete")
_FIELDS = ("documents", "updates", "deletes")

# The server's limits: write ops per command, and the size of a command document (BSONObjMaxInternalSize).
MAX_WRITE_BATCH_SIZE = 100_000
MAX_COMMAND_SIZE = MAX_BSON_SIZE + 16 * 1024
# pymongo's allowance for the command around a document (``message._COMMAND_OVERHEAD``).
COMMAND_OVERHEAD = 16382
# Room left for the fields the driver appends to every command ($db, lsid, $clusterTime, txnNumber...).
_DRIVER_FIELDS_ALLOWANCE = 1024

_pack_int = struct.Struct("<i").pack


def document_too_large(op_name: str, size: int, max_size: int) -> NoReturn:
    """pymongo's DocumentTooLarge, with its wording."""
    if op_name == "insert":
        raise DocumentTooLarge(
            f"BSON document too large ({size} bytes) - the connected server supports BSON "
            f"document sizes up to {max_size} bytes."
        )
    raise DocumentTooLarge(f"{op_name} command document too large")


def check_write_response(result: Mapping[str, Any]) -> None:
    """Raises for a single write's reply as pymongo does: the last write error, else the write concern
    error (as WTimeoutError when it is a timeout)."""
    write_errors = result.get("writeErrors")
    if write_errors:
        error = write_errors[-1]
        if error.get("code") == 11000:
            raise DuplicateKeyError(error.get("errmsg"), 11000, error)
        raise WriteError(error.get("errmsg"), error.get("code"), error)
    wce = _write_concern_error(result)
    if wce:
        # As pymongo: the server's errmsg as is (None if it has none, whatever pymongo's annotation says).
        raise write_concern_error(wce.get("errmsg"), wce.get("code"), wce)


def _write_concern_error(result: Mapping[str, Any]) -> Mapping[str, Any] | None:
    wce = result.get("writeConcernError")
    if wce and result.get("errorLabels"):
        # The server reports labels at the top level; pymongo attaches them to the error document.
        wce = {**wce, "errorLabels": result["errorLabels"]}
    return wce


class _Run:
    """One kind of write op, with each op's index in the caller's request list."""

    def __init__(self, op_type: int) -> None:
        self.op_type = op_type
        self.index_map: list[int] = []
        self.ops: list[Any] = []
        self.encoded: list[bytes] = []

    def add(self, index: int, op: Any, encoded: bytes) -> None:
        self.index_map.append(index)
        self.ops.append(op)
        self.encoded.append(encoded)


def _new_result() -> dict[str, Any]:
    return {
        "writeErrors": [],
        "writeConcernErrors": [],
        "nInserted": 0,
        "nUpserted": 0,
        "nMatched": 0,
        "nModified": 0,
        "nRemoved": 0,
        "upserted": [],
    }


def _merge(run: _Run, full: dict[str, Any], offset: int, result: Mapping[str, Any]) -> None:
    """Adds one command's reply to the bulk result (pymongo's ``_merge_command``)."""
    affected = result.get("n", 0)
    if run.op_type == INSERT:
        full["nInserted"] += affected
    elif run.op_type == DELETE:
        full["nRemoved"] += affected
    else:
        upserted = result.get("upserted")
        if upserted:
            for doc in upserted:
                doc["index"] = run.index_map[doc["index"] + offset]
            full["upserted"].extend(upserted)
            full["nUpserted"] += len(upserted)
            full["nMatched"] += affected - len(upserted)
        else:
            full["nMatched"] += affected
        full["nModified"] += result["nModified"]
    for error in result.get("writeErrors") or ():
        error = dict(error)
        idx = error["index"] + offset
        error["index"] = run.index_map[idx]
        error["op"] = run.ops[idx]
        full["writeErrors"].append(error)
    wce = _write_concern_error(result)
    if wce:
        full["writeConcernErrors"].append(wce)


class BulkWriter:
    """Collects write ops and runs them as batched write commands.

    The ``add_*`` methods have the names and arguments pymongo's request classes (``InsertOne``,
    ``UpdateMany``...) call from ``_add_to_bulk``, so those classes validate and shape their own arguments
    exactly as they do for pymongo.
    """

    def __init__(
        self,
        collection: CollectionWrites,
        ordered: bool,
        bypass_document_validation: bool | None,
        comment: Any = None,
        let: Mapping[str, Any] | None = None,
        session: ClientSession | None = None,
    ) -> None:
        if let is not None and not isinstance(let, (MutableMapping, RawBSONDocument)):
            validate_is_document_type("let", let)
        self._collection = collection
        self._session = session
        self._reply_codec = codec_for_replies(collection.codec_options)
        self._ordered = ordered
        self._bypass = bypass_document_validation
        self._comment = comment
        self._let = let
        self.ops: list[tuple[int, Any]] = []
        self.uses_collation = False
        self.uses_array_filters = False
        self.uses_sort = False
        # pymongo's rule: a bulk holding a multi-document op is not a retryable write.
        self.retryable = True

    # -- pymongo's request protocol ---------------------------------------------------------------------

    def add_insert(self, document: Any) -> None:
        validate_is_document_type("document", document)
        if not (isinstance(document, RawBSONDocument) or "_id" in document):
            document["_id"] = ObjectId()
        self.ops.append((INSERT, document))

    def add_update(
        self,
        selector: Mapping[str, Any],
        update: Any,
        multi: bool,
        upsert: bool | None,
        collation: Mapping[str, Any] | None = None,
        array_filters: list[Any] | None = None,
        hint: Any = None,
        sort: Mapping[str, Any] | None = None,
    ) -> None:
        validate_ok_for_update(update)
        op: dict[str, Any] = {"q": selector, "u": update, "multi": multi}
        if multi:
            self.retryable = False
        self._add_update_options(op, upsert, collation, array_filters, hint, sort)

    def add_replace(
        self,
        selector: Mapping[str, Any],
        replacement: Mapping[str, Any],
        upsert: bool | None,
        collation: Mapping[str, Any] | None = None,
        hint: Any = None,
        sort: Mapping[str, Any] | None = None,
    ) -> None:
        validate_ok_for_replace(replacement)
        op: dict[str, Any] = {"q": selector, "u": replacement}
        self._add_update_options(op, upsert, collation, None, hint, sort)

    def _add_update_options(
        self,
        op: dict[str, Any],
        upsert: bool | None,
        collation: Any,
        array_filters: Any,
        hint: Any,
        sort: Any,
    ) -> None:
        if upsert is not None:
            op["upsert"] = upsert
        if collation is not None:
            self.uses_collation = True
            op["collation"] = collation
        if array_filters is not None:
            self.uses_array_filters = True
            op["arrayFilters"] = array_filters
        if hint is not None:
            op["hint"] = hint
        if sort is not None:
            self.uses_sort = True
            op["sort"] = sort
        self.ops.append((UPDATE, op))

    def add_delete(
        self,
        selector: Mapping[str, Any],
        limit: int,
        collation: Mapping[str, Any] | None = None,
        hint: Any = None,
    ) -> None:
        op: dict[str, Any] = {"q": selector, "limit": limit}
        if not limit:
            self.retryable = False
        if collation is not None:
            self.uses_collation = True
            op["collation"] = collation
        if hint is not None:
            op["hint"] = hint
        self.ops.append((DELETE, op))

    # -- execution --------------------------------------------------------------------------------------

    def _runs(self) -> Iterator[_Run]:
        codec = self._collection.codec_options
        encoded = [(t, op, encode(op, False, codec)) for t, op in self.ops]
        # pymongo sends a batch as one message, which the server refuses whole if an op in it is over its
        # command size limit: nothing of it is written. Checking them all first keeps that all-or-nothing.
        limit = MAX_COMMAND_SIZE - _DRIVER_FIELDS_ALLOWANCE - 1024
        for op_type, _, data in encoded:
            if len(data) > limit:
                document_too_large(_COMMANDS[op_type], len(data), MAX_BSON_SIZE + COMMAND_OVERHEAD)
        if self._ordered:
            run: _Run | None = None
            for idx, (op_type, op, data) in enumerate(encoded):
                if run is None or run.op_type != op_type:
                    if run is not None:
                        yield run
                    run = _Run(op_type)
                run.add(idx, op, data)
            if run is not None:
                yield run
        else:
            runs = [_Run(INSERT), _Run(UPDATE), _Run(DELETE)]
            for idx, (op_type, op, data) in enumerate(encoded):
                runs[op_type].add(idx, op, data)
            yield from (r for r in runs if r.ops)

    def _header(self, op_type: int, write_concern: WriteConcern | None) -> dict[str, Any]:
        cmd: dict[str, Any] = {_COMMANDS[op_type]: self._collection.name, "ordered": self._ordered}
        if self._comment is not None:
            cmd["comment"] = self._comment
        if write_concern is not None and not write_concern.is_server_default:
            cmd["writeConcern"] = write_concern_document(write_concern)
        if self._bypass is not None:
            cmd["bypassDocumentValidation"] = self._bypass
        if self._let is not None and op_type in (UPDATE, DELETE):
            cmd["let"] = self._let
        return cmd

    def _send(
        self, run: _Run, start: int, write_concern: WriteConcern | None, *, unacknowledged: bool
    ) -> Operation[tuple[dict[str, Any], int]]:
        """Sends as many of ``run``'s ops from ``start`` as fit in one command; returns the reply and how
        many were sent."""
        header = encode(self._header(run.op_type, write_concern), False, self._collection.codec_options)
        room = MAX_COMMAND_SIZE - _DRIVER_FIELDS_ALLOWANCE - len(header) - len(_FIELDS[run.op_type]) - 7
        elements: list[bytes] = []
        size = 0
        for i in range(start, min(len(run.ops), start + MAX_WRITE_BATCH_SIZE)):
            data = run.encoded[i]
            if unacknowledged and len(data) > MAX_BSON_SIZE:
                # Unacknowledged, the server's error would go unseen: pymongo checks before sending.
                document_too_large(_COMMANDS[run.op_type], len(data), MAX_BSON_SIZE)
            key = str(i - start).encode()
            element_size = 2 + len(key) + len(data)
            if size + element_size > room:
                if not elements:
                    document_too_large(_COMMANDS[run.op_type], len(data), MAX_BSON_SIZE + COMMAND_OVERHEAD)
                break
            elements.append(b"\x03" + key + b"\x00" + data)
            size += element_size
        array = b"".join(elements)
        array_doc = _pack_int(len(array) + 5) + array + b"\x00"
        body = header[4:-1] + b"\x04" + _FIELDS[run.op_type].encode() + b"\x00" + array_doc
        command = RawBSONDocument(_pack_int(len(body) + 5) + body + b"\x00")
        reply = yield from self._collection._run_command(
            command,
            self._reply_codec,
            session=self._session,
            retryable=self.retryable and not unacknowledged,
            write=True,
        )
        return reply, len(elements)

    def execute(self, write_concern: WriteConcern) -> Operation[dict[str, Any] | None]:
        """Runs the ops; pymongo's ``bulk_api_result``, or None for an unacknowledged write concern.

        Raises BulkWriteError (with pymongo's ``details``) if any op failed.
        """
        if not self.ops:
            raise InvalidOperation("No operations to execute")
        if write_concern.acknowledged:
            return (yield from self._execute_acknowledged(write_concern))
        (yield from self._execute_unacknowledged(write_concern))
        return None

    def _execute_acknowledged(self, write_concern: WriteConcern) -> Operation[dict[str, Any]]:
        full = _new_result()
        for run in self._runs():
            offset = 0
            while offset < len(run.ops):
                reply, sent = yield from self._send(run, offset, write_concern, unacknowledged=False)
                _merge(run, full, offset, reply)
                wce = reply.get("writeConcernError")
                if wce and wce.get("code", 0) in _RETRYABLE_ERROR_CODES:
                    # pymongo stops the bulk at a write concern error it would retry (which the core
                    # already did), and raises it labelled as the retryable write it was.
                    raise self._bulk_write_error(full, labelled=True)
                if self._ordered and "writeErrors" in reply:
                    break
                offset += sent
            # Write concern errors do not stop an ordered bulk; write errors do.
            if self._ordered and full["writeErrors"]:
                break
        if full["writeErrors"] or full["writeConcernErrors"]:
            raise self._bulk_write_error(full, labelled=False)
        return full

    def _bulk_write_error(self, full: dict[str, Any], labelled: bool) -> BulkWriteError:
        full["writeErrors"].sort(key=lambda e: e["index"])
        error = BulkWriteError(full)
        if labelled and self.retryable and full["writeConcernErrors"]:
            # pymongo's _add_retryable_write_error: the last write concern error's labels.
            for label in full["writeConcernErrors"][-1].get("errorLabels", ()):
                error._add_error_label(label)
        return error

    def _execute_unacknowledged(self, write_concern: WriteConcern) -> Operation[None]:
        if self.uses_collation:
            raise ConfigurationError("Collation is unsupported for unacknowledged writes.")
        if self.uses_array_filters:
            raise ConfigurationError("arrayFilters is unsupported for unacknowledged writes.")
        if self.uses_sort:
            raise ConfigurationError(
                "Must be connected to MongoDB 8.0+ to use sort on unacknowledged update commands."
            )
        if self._bypass:
            raise OperationFailure("Cannot set bypass_document_validation with unacknowledged write concern")
        if not self._ordered:
            for run in self._runs():
                offset = 0
                while offset < len(run.ops):
                    offset += (yield from self._send(run, offset, write_concern, unacknowledged=True))[1]
            return
        # As pymongo does: an ordered unacknowledged bulk is sent acknowledged (so that it stops at the first
        # error, which it then keeps to itself), but for a last batch of one op.
        runs = list(self._runs())
        try:
            for n, run in enumerate(runs):
                offset = 0
                while offset < len(run.ops):
                    final = n == len(runs) - 1 and len(run.ops) - offset == 1
                    reply, sent = yield from self._send(
                        run, offset, write_concern if final else None, unacknowledged=final
                    )
                    if "writeErrors" in reply:
                        return
                    offset += sent
        except OperationFailure:
            pass
