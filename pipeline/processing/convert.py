"""CSV -> typed, keyed Parquet for one dataset, streamed in batches (contract §5, §6).

Memory stays bounded whatever the file size: the CSV is read in blocks, each batch is typed and
keyed, and row groups of a fixed size are written as soon as they fill. Output is deterministic
(same input, same bytes): fixed writer options and row-group size, CSV row order, no clocks.

Structural problems (ragged rows, broken quoting, bytes that are not UTF-8, an empty file, empty
or duplicate column names, an enormous field) raise ``InputError`` naming file, line and column.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, Queue

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lakehook.errors import InputError
from pipeline import naming
from pipeline.model import OutputColumn
from pipeline.processing.contents import MAX_COLUMNS, DatasetContents
from pipeline.processing.keys import EncodedColumn, KeyHasher
from pipeline.processing.types import BIGINT, DOUBLE, INTEGER, VARCHAR, ColumnType, convert

BLOCK_SIZE = 16 << 20  # bytes of CSV per read block; also the largest field accepted
ROW_GROUP = 1 << 17  # rows per Parquet row group
ROWS_PER_FILE = 1 << 23  # rows per Parquet file
WRITER_OPTIONS = {
    "compression": "snappy",
    "version": "2.6",
    "data_page_version": "1.0",
    "write_statistics": True,
}
# a column whose distinct values are more than this share of its values in the first rows
# is written without a dictionary (``dictionary_columns``)
NEAR_UNIQUE = 0.2
DICTIONARY_SAMPLE = 1 << 14  # rows judged


@dataclass(frozen=True)
class PlannedColumn:
    """One output column and how to make it from the CSV."""

    out: OutputColumn
    ctype: ColumnType
    source_index: int | None  # CSV column index; None: declared but missing (all NULL)
    key: str | None = None  # for <key>_sk
    key_indexes: tuple[int, ...] = ()
    key_types: tuple[ColumnType | None, ...] = ()


@dataclass(frozen=True)
class ConvertResult:
    """What converting one CSV read and wrote (a step's description of itself)."""

    columns: tuple[OutputColumn, ...]
    rows: int
    files: tuple[Path, ...]
    invalid_values: dict[str, int]
    null_keys: dict[str, int]
    keys: dict[str, tuple[str, ...]]
    warnings: tuple[str, ...] = ()
    bytes_read: int = 0
    null_counts: dict[str, int] = field(default_factory=dict)  # per table column (lineage)


@dataclass
class _Layout:
    columns: list[PlannedColumn] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def read_header(path: Path, display: str, max_columns: int = MAX_COLUMNS) -> list[str]:
    """The header row, validated: names present, unique after sanitising, at most
    ``max_columns`` of them (checked before any per-column work)."""
    return _read_header(path, display, max_columns)[0]


def _read_header(path: Path, display: str, max_columns: int) -> tuple[list[str], int]:
    """The validated header and its length in bytes (where the data rows start)."""
    head, complete = _header_bytes(path)
    size = path.stat().st_size
    if not complete and size > len(head):
        raise InputError(
            f"the header row is longer than {BLOCK_SIZE >> 20} MiB",
            file=display,
            line=1,
            hint="check the header row: it needs a line end, and its quotes must be closed",
        )
    if not head.strip(b"\xef\xbb\xbf \r\n\t"):
        if size > len(head):
            raise InputError(
                "the first line is empty",
                file=display,
                line=1,
                hint="put the header row on line 1",
            )
        raise InputError(
            "empty file", file=display, line=1, hint="deliver a header row and data rows"
        )
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        if complete or err.start < len(head) - 4:  # not just a character cut at the end
            _raise_encoding(path, display)
        text = head[: err.start].decode("utf-8-sig")
    try:
        header = next(csv.reader(io.StringIO(text, newline=""), strict=True))
    except (csv.Error, StopIteration) as err:
        raise InputError(
            f"unreadable header: {err}", file=display, line=1, hint="fix the header row"
        ) from None
    if len(header) > max_columns:
        raise InputError(
            f"the header has {len(header)} columns, more than the limit of {max_columns} "
            "(setting max_columns, LAKEHOOK_MAX_COLUMNS)",
            file=display,
            line=1,
            hint="split the dataset into narrower files, or raise LAKEHOOK_MAX_COLUMNS",
        )
    seen: dict[str, int] = {}
    for number, name in enumerate(header, start=1):
        if not name.strip():
            raise InputError(
                f"column {number} of the header has no name",
                file=display,
                line=1,
                column=str(number),
                hint="give every column a name",
            )
        table_col = naming.column_name(name.strip())
        if table_col in seen:
            raise InputError(
                f"columns {seen[table_col]} and {number} both become column {table_col!r}",
                file=display,
                line=1,
                column=name,
                hint="rename one of the columns",
            )
        seen[table_col] = number
    return header, len(head)


def _header_bytes(path: Path, step: int = 1 << 16) -> tuple[bytes, bool]:
    """The file's first bytes up to the end of the header record (at most ``BLOCK_SIZE``), and
    whether that end was found (or the file ended).

    One pass: each piece read is scanned once, with the quote parity carried from the last.
    """
    pieces: list[bytes] = []
    size = 0
    inside = False
    with path.open("rb") as raw:
        while size < BLOCK_SIZE:
            more = raw.read(step)
            if not more:
                return b"".join(pieces), True
            end, inside = first_record_end(more, inside)
            if end != -1:
                pieces.append(more[: end + 1])
                return b"".join(pieces), True
            pieces.append(more)
            size += len(more)
    return b"".join(pieces), False


def plan_columns(
    header: Sequence[str],
    declared: DatasetContents | None,
    keys: Mapping[str, Sequence[str]],
) -> _Layout:
    """Output columns: keys (config order), declared (declared order), undeclared (CSV order)."""
    layout = _Layout()
    by_name = {naming.column_name(h.strip()): i for i, h in enumerate(header)}
    declared_types: dict[str, ColumnType] = {}
    if declared is not None:
        for col in declared.columns:
            if col.ctype is not None:
                declared_types[naming.column_name(col.name)] = col.ctype
    for key, natural in keys.items():
        names = [naming.column_name(c) for c in natural]
        if all(n in by_name for n in names):
            layout.columns.append(
                PlannedColumn(
                    OutputColumn(naming.key_column(key), "bigint", key_sources=tuple(names)),
                    ColumnType("bigint", "bigint"),
                    None,
                    key=key,
                    key_indexes=tuple(by_name[n] for n in names),
                    key_types=tuple(declared_types.get(n) for n in names),
                )
            )
    used: set[str] = set()
    if declared is None or not declared.columns:
        layout.warnings.append("no contents rows: every column is varchar")
    else:
        missing = []
        for col in declared.columns:
            name = naming.column_name(col.name)
            ctype = col.ctype or VARCHAR
            index = by_name.get(name)
            if index is None:
                missing.append(col.name)
            used.add(name)
            layout.columns.append(
                PlannedColumn(
                    OutputColumn(
                        name,
                        ctype.trino,
                        source=header[index].strip() if index is not None else None,
                        declared=col.declared,
                        label=col.label,
                    ),
                    ctype,
                    index,
                )
            )
        if missing:
            layout.warnings.append(f"declared but not in the CSV (all NULL): {', '.join(missing)}")
    undeclared = [h for h in header if naming.column_name(h.strip()) not in used]
    if undeclared and declared is not None and declared.columns:
        layout.warnings.append(f"not declared in the contents (varchar): {', '.join(undeclared)}")
    for name in undeclared:
        index = by_name[naming.column_name(name.strip())]
        layout.columns.append(
            PlannedColumn(
                OutputColumn(naming.column_name(name.strip()), "varchar", source=name.strip()),
                VARCHAR,
                index,
            )
        )
    return layout


def reader_typed(columns: Sequence[PlannedColumn]) -> dict[int, pa.DataType]:
    """CSV columns the CSV reader may type itself: declared ``double``, ``integer`` or
    ``bigint``, made into one table column and into no key (a key part is the text as written,
    contract §6).

    The reader accepts a value exactly when Arrow's cast would accept it with spaces and tabs
    trimmed, and then gives the same number; that is what the cast fast path of
    ``types.convert`` gives, and what the checked path gives for the trimmed text
    (``tests/unit/test_bounds.py``, the reader-typed differential). Anything else
    fails the piece, which is then read as text (``_ReaderTypes``)."""
    uses: dict[int, int] = {}
    for col in columns:
        for index in (*col.key_indexes, *(() if col.source_index is None else (col.source_index,))):
            uses[index] = uses.get(index, 0) + 1
    typed: dict[int, pa.DataType] = {}
    for col in columns:
        index = col.source_index
        numeric = col.ctype.kind in (DOUBLE, INTEGER, BIGINT)
        if numeric and col.key is None and index is not None and uses[index] == 1:
            typed[index] = col.ctype.arrow
    return typed


class _ReaderTypes:
    """The reader's column types for each piece: the ``reader_typed`` columns, less the ones a
    value of an earlier piece made the reader refuse (read as text from then on, so a column
    with invalid values costs one extra parse of one piece), less the integer columns of a
    piece holding an ``x`` (Arrow reads ``0x10`` as 16; the contract's integers are
    decimal). Whatever the reader types, the table is the same."""

    def __init__(self, header: Sequence[str], typed: Mapping[int, pa.DataType]) -> None:
        self.header = list(header)
        self.typed = dict(typed)
        self._options: dict[frozenset[int], pacsv.ConvertOptions] = {}
        self._last: frozenset[int] = frozenset()

    def options(self, chunk: bytes) -> pacsv.ConvertOptions:
        hex_possible = b"x" in chunk or b"X" in chunk
        chosen = frozenset(
            i for i, t in self.typed.items() if not (hex_possible and pa.types.is_integer(t))
        )
        self._last = chosen
        if chosen not in self._options:
            types = {h: pa.string() for h in self.header}
            for i in chosen:
                types[self.header[i]] = self.typed[i]
            self._options[chosen] = pacsv.ConvertOptions(
                column_types=types,
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
                null_values=[""],
            )
        return self._options[chosen]

    def refused(self, err: pa.ArrowInvalid) -> bool:
        """Whether ``err`` is the reader refusing a value of a column it typed (which is then
        read as text); False for any other error."""
        found = _CONVERSION_ERROR.match(str(err))
        if found is None:
            return False
        index = int(found.group(1))
        if index not in self._last:
            return False
        del self.typed[index]
        return True


_CONVERSION_ERROR = re.compile(r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error")


def convert_file(
    csv_path: Path,
    declared: DatasetContents | None,
    keys: Mapping[str, Sequence[str]],
    out_dir: Path,
    *,
    display_path: str | None = None,
    invalid_values: str = "report",
    block_size: int = BLOCK_SIZE,
    row_group: int = ROW_GROUP,
    rows_per_file: int = ROWS_PER_FILE,
    max_columns: int = MAX_COLUMNS,
) -> ConvertResult:
    """Convert one dataset's CSV into Parquet files ``out_dir/part-NNNNN.parquet``."""
    display = display_path or str(csv_path)
    header, header_size = _read_header(csv_path, display, max_columns)
    layout = plan_columns(header, declared, keys)
    schema = pa.schema(
        [
            pa.field(c.out.name, c.ctype.arrow if c.key is None else pa.int64())
            for c in layout.columns
        ]
    )
    hashers = {c.key: KeyHasher(c.key, c.key_types) for c in layout.columns if c.key is not None}
    invalid = {c.out.name: 0 for c in layout.columns if c.key is None}
    nulls = {c.out.name: 0 for c in layout.columns}
    ragged: list[str] = []

    def on_invalid_row(row: pacsv.InvalidRow) -> str:
        ragged.append(f"{row.actual_columns} fields where the header has {row.expected_columns}")
        return "error"

    reader_options = pacsv.ReadOptions(
        column_names=header, use_threads=True, block_size=max(block_size >> 2, 1 << 16)
    )
    parse_options = pacsv.ParseOptions(invalid_row_handler=on_invalid_row)
    # numeric columns the CSV reader types itself (one pass instead of text, then a cast), for
    # as long as their values let it: ``_ReaderTypes``; never with invalid_values: fail, whose
    # error quotes the text
    reader_types = _ReaderTypes(
        header, reader_typed(layout.columns) if invalid_values == "report" else {}
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = _Writer(out_dir, schema, row_group, rows_per_file)
    rows = 0
    try:

        def read(chunk: bytes, convert_options: pacsv.ConvertOptions) -> pa.Table:
            try:  # blocks of 1/4 of a piece: parsed on every core
                return pacsv.read_csv(
                    pa.BufferReader(chunk),
                    read_options=reader_options,
                    parse_options=parse_options,
                    convert_options=convert_options,
                )
            except pa.ArrowInvalid as err:
                if "straddl" not in str(err):
                    raise
            # a record longer than a block: the piece as one block (fields up to its size)
            one_block = pacsv.ReadOptions(
                column_names=header, use_threads=False, block_size=len(chunk) + 1
            )
            return pacsv.read_csv(
                pa.BufferReader(chunk),
                read_options=one_block,
                parse_options=parse_options,
                convert_options=convert_options,
            )

        def parse(chunk: bytes) -> pa.Table:
            if chunk.startswith(codecs.BOM_UTF8):
                # pyarrow drops a byte order mark at the start of what it reads, but here that
                # is a data row's first character (U+FEFF): an empty line first keeps it
                chunk = b"\n" + chunk
            while True:
                try:  # one record batch per parsed block: typed and keyed as they are
                    return read(chunk, reader_types.options(chunk))
                except pa.ArrowInvalid as err:
                    if not reader_types.refused(err):
                        raise

        chunks = _record_chunks(csv_path, header_size, block_size)
        for batch in _batches(chunks, parse):
            arrays = []
            encoded: dict[int, EncodedColumn] = {}  # key columns shared by several keys
            for col in layout.columns:
                if col.key is not None:
                    for i, ctype in zip(col.key_indexes, col.key_types, strict=True):
                        if i not in encoded:
                            encoded[i] = EncodedColumn.of(batch.column(i), ctype)
                    arrays.append(
                        hashers[col.key].compute_encoded(
                            [encoded[i] for i in col.key_indexes],
                            [batch.column(i) for i in col.key_indexes],
                        )
                    )
                elif col.source_index is None:
                    arrays.append(pa.nulls(batch.num_rows, col.ctype.arrow))
                else:
                    source = batch.column(col.source_index)
                    typed, bad = convert(source, col.ctype)
                    if bad and invalid_values == "fail":
                        _raise_invalid(source, typed, col, rows, display)
                    invalid[col.out.name] += bad
                    arrays.append(typed)
            for col, array in zip(layout.columns, arrays, strict=True):
                nulls[col.out.name] += array.null_count
            writer.write(pa.RecordBatch.from_arrays(arrays, schema=schema))
            rows += batch.num_rows
        for hasher in hashers.values():  # the collision check across batches, before publishing
            hasher.finish()
    except pa.ArrowInvalid as err:
        writer.abort()
        _raise_structural(err, csv_path, display, len(header), ragged, block_size)
    except BaseException:  # invalid values with invalid_values: fail, a key collision, ...
        writer.abort()  # no partial output, no writer thread left behind
        raise
    writer.close()
    return ConvertResult(
        columns=tuple(c.out for c in layout.columns),
        rows=rows,
        files=tuple(writer.files),
        invalid_values=invalid,
        null_keys={k: h.missing for k, h in hashers.items()},
        keys={c.key: c.out.key_sources for c in layout.columns if c.key is not None},
        warnings=tuple(layout.warnings),
        bytes_read=csv_path.stat().st_size,
        null_counts=dict(nulls),
    )


def _record_chunks(path: Path, offset: int, size: int) -> Iterator[bytes]:
    """The file after ``offset`` in pieces of about ``size`` bytes, each ending at a record end.

    A piece is cut after the last newline outside quotes. One pass over the bytes: each block
    read is scanned once, the quote parity of the carried tail is kept (never recounted), so
    the work is linear whatever the quoting. A record longer than ``size`` (an enormous field
    or an unterminated quote) is a structural error. Each piece is copied once (the carried
    tail and the block's records joined).
    """
    with path.open("rb") as raw:
        raw.seek(offset)
        carry = b""
        inside = False  # the carried tail ends inside quotes
        while data := raw.read(size):
            cut, inside_after = last_record_end(data, inside)
            if cut == -1:
                if len(carry) + len(data) > size:
                    raise pa.ArrowInvalid("a record straddles the block limit")
                carry += data
                inside = inside_after
                continue
            if carry:  # the record carried over must end within the limit too
                first, _ = _scan_first(data, inside)
                if len(carry) + first + 1 > size:
                    raise pa.ArrowInvalid("a record straddles the block limit")
            yield b"".join((carry, memoryview(data)[: cut + 1]))
            carry = data[cut + 1 :]
            inside = inside_after
        if inside:  # the file ends inside quotes: pyarrow would take the rest as one field
            raise pa.ArrowInvalid("CSV parse error: a quote is never closed")
        if carry.strip():
            yield carry


_QUOTE, _NEWLINE, _COMMA = 0x22, 0x0A, 0x2C
_ERROR_BLOCK = 1 << 16  # bytes read at a time on error paths
_WINDOW = 1 << 16


def first_record_end(data: bytes, inside: bool) -> tuple[int, bool]:
    """The first newline of ``data`` outside quotes (-1: none) and the quote state at the end.

    ``inside`` is the state before ``data``. Vectorised in windows: linear, bounded memory.
    """
    first, state = _scan_first(data, inside)
    if first == -1:
        return -1, state
    return first, inside ^ _odd_quotes(data)


def _scan_first(data: bytes, inside: bool) -> tuple[int, bool]:
    """The first newline of ``data`` outside quotes (-1: none) and the quote state where the
    scan stopped (at the end of ``data`` when there is none)."""
    state = inside
    for start in range(0, len(data), _WINDOW):
        window = np.frombuffer(data, np.uint8, min(_WINDOW, len(data) - start), start)
        quotes = window == _QUOTE
        parity = np.cumsum(quotes, dtype=np.uint8) & 1  # quotes up to and including each byte
        outside = (parity.astype(np.bool_) == state) & (window == _NEWLINE)
        hits = np.flatnonzero(outside)
        if hits.size:
            return start + int(hits[0]), state
        state ^= bool(parity[-1])
    return -1, state


def _odd_quotes(data: bytes) -> bool:
    """Whether ``data`` holds an odd number of double quotes (a byte search first: most CSV
    pieces hold none, and finding that is far cheaper than counting)."""
    return b'"' in data and bool(data.count(b'"') & 1)


def last_record_end(data: bytes, inside: bool) -> tuple[int, bool]:
    """The last newline of ``data`` outside quotes (-1: none) and the quote state at the end.

    ``inside`` is the state before ``data``. The end state comes from one count; windows are
    then scanned backwards from the end (usually one), so the work is linear and bounded.
    """
    end_state = inside ^ _odd_quotes(data)
    state = end_state  # the state after the window being scanned
    stop = len(data)
    width = _WINDOW
    while stop > 0:
        start = max(0, stop - width)
        window = np.frombuffer(data, np.uint8, stop - start, start)
        quotes = window[::-1] == _QUOTE
        after = (np.cumsum(quotes, dtype=np.uint8) & 1)[::-1]  # quotes at or after each byte
        outside = (after.astype(np.bool_) == state) & (window == _NEWLINE)
        hits = np.flatnonzero(outside)
        if hits.size:
            return start + int(hits[-1]), end_state
        state ^= bool(after[0])
        stop = start
        width = min(width * 4, 1 << 22)
    return -1, end_state


def _batches(
    chunks: Iterator[bytes], parse: Callable[[bytes], pa.Table], ahead: int = 1
) -> Iterator[pa.RecordBatch]:
    """The non-empty record batches of ``chunks`` parsed, read and parsed ``ahead`` pieces ahead.

    A background thread reads the next pieces and parses them (pyarrow parses on both cores
    and releases the GIL) while the caller types and keys this one. The queue is bounded, so
    memory stays a few pieces whatever the file size -- unlike pyarrow's own streaming reader,
    whose read-ahead is not bounded by the consumer (it held 0.5 GiB of a 0.5 GB file). A
    piece's batches (one per parsed block) are handed over as they are, never concatenated.
    """
    queue: Queue[pa.Table | BaseException | None] = Queue(maxsize=ahead)
    stop = threading.Event()

    def pump() -> None:
        try:
            for chunk in chunks:
                if stop.is_set():
                    return
                table = parse(chunk)
                if table.num_rows:
                    queue.put(table)
        except BaseException as err:  # handed to the consumer, raised there
            queue.put(err)
            return
        queue.put(None)

    thread = threading.Thread(target=pump, name="csv-reader", daemon=True)
    thread.start()
    try:
        while (item := queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            for batch in item.to_batches():
                if batch.num_rows:
                    yield batch
    finally:
        stop.set()
        while thread.is_alive():  # unblock a pump waiting on a full queue, then let it end
            with contextlib.suppress(Empty):
                queue.get(timeout=0.05)
        thread.join()


def dictionary_columns(table: pa.Table) -> list[str]:
    """The columns of ``table`` (a conversion's first row group) worth a dictionary: those whose
    values repeat, at most ``NEAR_UNIQUE`` distinct values per value in its first
    ``DICTIONARY_SAMPLE`` rows (a tenth of the cost of judging the whole row group, with the same
    verdicts on the lab file: 1.0 and 0.95 for the sequence number and time stamp, at most 0.1
    for the others).

    A column of (nearly) unique values, a sequence number or a time stamp, gains nothing from a
    dictionary but a larger file, and trying one is the Parquet writer's costliest work: each
    value is hashed into a table that keeps growing (a dictionary of up to 1 MiB is kept). The
    choice depends on the data only, so the bytes stay a function of the input.
    """
    chosen = []
    sample = table.slice(0, DICTIONARY_SAMPLE)
    for name, column in zip(sample.column_names, sample.columns, strict=True):
        values = len(column) - column.null_count
        if values == 0 or pc.count_distinct(column).as_py() <= NEAR_UNIQUE * values:
            chosen.append(name)
    return chosen


class _Writer:
    """Parquet files of ``rows_per_file`` rows in row groups of exactly ``row_group`` rows.

    Row groups are encoded and compressed on one background thread (pyarrow releases the GIL)
    while the caller types and keys the next batch; at most ``MAX_PENDING`` row groups wait,
    so memory stays bounded. One thread, first in first out: the bytes do not depend on timing.
    Which columns get a dictionary is decided on the first row group (``dictionary_columns``),
    for every file of the conversion.
    """

    MAX_PENDING = 2

    def __init__(self, out_dir: Path, schema: pa.Schema, row_group: int, rows_per_file: int):
        self.out_dir, self.schema = out_dir, schema
        self.row_group, self.rows_per_file = row_group, max(rows_per_file, row_group)
        self.files: list[Path] = []
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = 0
        self._writer: pq.ParquetWriter | None = None
        self._in_file = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer")
        self._pending: deque[Future[None]] = deque()
        self._dictionary: list[str] | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        self._buffer.append(batch)
        self._buffered += batch.num_rows
        if self._buffered >= self.row_group:
            table = pa.Table.from_batches(self._buffer, schema=self.schema)
            full = (table.num_rows // self.row_group) * self.row_group
            for start in range(0, full, self.row_group):
                self._submit(table.slice(start, self.row_group))
            rest = table.slice(full)
            self._buffer = rest.to_batches()
            self._buffered = rest.num_rows

    def _submit(self, table: pa.Table) -> None:
        while len(self._pending) >= self.MAX_PENDING:
            self._pending.popleft().result()  # re-raises the writer's error here
        self._pending.append(self._pool.submit(self._flush, table))

    def _drain(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def _flush(self, table: pa.Table) -> None:
        if self._writer is None or self._in_file >= self.rows_per_file:
            if self._writer is not None:
                self._writer.close()
            path = self.out_dir / f"part-{len(self.files):05d}.parquet"
            self.files.append(path)
            if self._dictionary is None:
                self._dictionary = dictionary_columns(table)
            self._writer = pq.ParquetWriter(
                str(path), self.schema, use_dictionary=self._dictionary, **WRITER_OPTIONS
            )
            self._in_file = 0
        self._writer.write_table(table, row_group_size=self.row_group)
        self._in_file += table.num_rows

    def close(self) -> None:
        try:
            if self._buffered or (self._writer is None and not self._pending):
                self._submit(pa.Table.from_batches(self._buffer, schema=self.schema))
            self._drain()
            if self._writer is not None:
                self._writer.close()
        finally:
            self._pool.shutdown(wait=True)

    def abort(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)
        self._pending.clear()
        if self._writer is not None:
            self._writer.close()
        for path in self.files:
            path.unlink(missing_ok=True)
        self.files.clear()


def _raise_invalid(
    source: pa.Array, typed: pa.Array, col: PlannedColumn, rows_before: int, display: str
) -> None:
    bad = pc.and_(pc.is_valid(source), pc.is_null(typed))
    index = int(pc.index(bad, True).as_py())
    raise InputError(
        f"value {_shown(source[index].as_py())} is not a valid {col.ctype.trino} "
        "(invalid_values: fail)",
        file=display,
        line=rows_before + index + 2,
        column=col.out.source or col.out.name,
        hint="fix the value, or set invalid_values: report in lakehook.yaml to load it as NULL",
    )


def _shown(value: object, limit: int = 80) -> str:
    """A value for a message: its repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _raise_structural(
    err: pa.ArrowInvalid,
    path: Path,
    display: str,
    width: int,
    ragged: list[str],
    block_size: int = BLOCK_SIZE,
) -> None:
    message = str(err)
    if "UTF8" in message or "UTF-8" in message:
        _raise_encoding(path, display)
    if "straddl" in message or "block" in message.lower():
        line, detail = _first_bad_record(path, width, longest=block_size)
        raise InputError(
            f"a row is longer than {_size_text(block_size)} (an enormous field or an "
            f"unterminated quote){': ' + detail if detail else ''}",
            file=display,
            line=line,
            hint="check the quoting around that line; fields must stay under the limit",
        ) from None
    line, detail = _first_bad_record(path, width)
    reason = ragged[0] if ragged else detail or message
    raise InputError(
        f"broken row: {reason}",
        file=display,
        line=line,
        hint="every row needs as many fields as the header; check quotes and delimiters",
    ) from None


def _size_text(size: int) -> str:
    return f"{size >> 20} MiB" if size >= 1 << 20 else f"{size} bytes"


def _raise_encoding(path: Path, display: str) -> None:
    """Raise for the first bytes that are not UTF-8, reading the file in bounded blocks."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line, column = 1, 1  # line and byte column at the start of the block
    with path.open("rb") as raw:
        if raw.read(3) != b"\xef\xbb\xbf":
            raw.seek(0)
        while block := raw.read(_ERROR_BLOCK):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as err:
                # ``err.start`` counts from the decoder's buffered bytes (at most 3) + block
                start = max(err.start - len(err.object) + len(block), 0)
                before = block[:start]
                newlines = before.count(b"\n")
                at = start - before.rfind(b"\n") if newlines else column + start
                raise InputError(
                    f"bytes that are not UTF-8 ({block[start : start + 4]!r})",
                    file=display,
                    line=line + newlines,
                    column=str(at),
                    hint="save the file as UTF-8",
                ) from None
            newlines = block.count(b"\n")
            line += newlines
            column = len(block) - block.rfind(b"\n") if newlines else column + len(block)
    raise InputError("bytes that are not UTF-8", file=display, hint="save the file as UTF-8")


def _first_bad_record(path: Path, width: int, longest: int | None = None) -> tuple[int | None, str]:
    """Physical line and reason of the first record whose field count differs from the header
    (or that is longer than ``longest`` bytes, or whose quote is never closed).

    One streaming pass in blocks of ``_ERROR_BLOCK`` bytes (vectorised, quote parity carried):
    memory stays bounded whatever the length of a line; nothing is decoded or kept.
    """
    line = 1  # physical line at the start of the block
    record_line, fields, length, inside = 1, 1, 0, False  # the record being read
    with path.open("rb") as raw:
        while block := raw.read(_ERROR_BLOCK):
            data = np.frombuffer(block, np.uint8)
            state = (np.cumsum(data == _QUOTE, dtype=np.uint8) & 1).astype(np.bool_) ^ inside
            newline = data == _NEWLINE
            ends = np.flatnonzero(newline & ~state)
            commas = np.cumsum((data == _COMMA) & ~state, dtype=np.int64)
            lines = np.cumsum(newline, dtype=np.int64)
            previous = -1
            for end in ends.tolist():  # records ending in this block
                count = fields + int(commas[end]) - (int(commas[previous]) if previous >= 0 else 0)
                size = length + end - previous - 1
                blank = size == 0 or (size == 1 and block[end - 1 : end] == b"\r")
                if count != width and not blank:
                    return record_line, f"{count} fields where the header has {width}"
                if longest is not None and size > longest:
                    return record_line, f"a record of {size} bytes"
                record_line = line + int(lines[end])
                fields, length, previous = 1, 0, end
            tail = int(commas[-1]) - (int(commas[previous]) if previous >= 0 else 0)
            fields += tail
            length += len(block) - previous - 1
            inside = bool(state[-1])
            line += int(lines[-1])
            if longest is not None and length > longest and not inside:
                return record_line, f"a record of more than {length} bytes"
    if inside:
        return record_line, "a quote opened here is never closed"
    if length and fields != width:
        return record_line, f"{fields} fields where the header has {width}"
    return None, ""
