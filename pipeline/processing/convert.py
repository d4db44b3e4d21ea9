"""CSV -> typed, keyed Parquet for one dataset, streamed in batches (contract §5, §6).

Memory stays bounded whatever the file size: the CSV is read in blocks, each batch is typed and
keyed, and row groups of a fixed size are written as soon as they fill. Output is deterministic
(same input, same bytes): fixed writer options and row-group size, CSV row order, no clocks.

Structural problems (ragged rows, broken quoting, bytes that are not UTF-8, an empty file, empty
or duplicate column names, an enormous field) raise ``InputError`` naming file, line and column.
"""

from __future__ import annotations

import contextlib
import csv
import io
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, Queue

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lakehook.errors import InputError
from pipeline import naming
from pipeline.model import OutputColumn
from pipeline.processing.contents import DatasetContents
from pipeline.processing.keys import KeyHasher
from pipeline.processing.types import VARCHAR, ColumnType, convert

BLOCK_SIZE = 16 << 20  # bytes of CSV per read block; also the largest field accepted
ROW_GROUP = 1 << 17  # rows per Parquet row group
ROWS_PER_FILE = 1 << 23  # rows per Parquet file
WRITER_OPTIONS = {
    "compression": "snappy",
    "version": "2.6",
    "data_page_version": "1.0",
    "use_dictionary": True,
    "write_statistics": True,
}


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


@dataclass
class _Layout:
    columns: list[PlannedColumn] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def read_header(path: Path, display: str) -> list[str]:
    """The header row, validated: names present, unique after sanitising."""
    head = _header_bytes(path)
    if not head.strip(b"\xef\xbb\xbf \r\n\t"):
        if path.stat().st_size > len(head):
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
        if err.start < len(head) - 4:  # not just a character cut at the block end
            _raise_encoding(path, display)
        text = head[: err.start].decode("utf-8-sig")
    try:
        header = next(csv.reader(io.StringIO(text, newline=""), strict=True))
    except (csv.Error, StopIteration) as err:
        raise InputError(
            f"unreadable header: {err}", file=display, line=1, hint="fix the header row"
        ) from None
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
    return header


def _header_bytes(path: Path, step: int = 1 << 16) -> bytes:
    """The file's first bytes, up to the end of the header record (at most ``BLOCK_SIZE``)."""
    with path.open("rb") as raw:
        head = raw.read(step)
        while len(head) < BLOCK_SIZE:
            end = head.find(b"\n")
            while end != -1 and head.count(b'"', 0, end) % 2:  # newline inside a quoted name
                end = head.find(b"\n", end + 1)
            if end != -1:
                return head[: end + 1]
            more = raw.read(step)
            if not more:
                return head
            head += more
    return head


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
) -> ConvertResult:
    """Convert one dataset's CSV into Parquet files ``out_dir/part-NNNNN.parquet``."""
    display = display_path or str(csv_path)
    header = read_header(csv_path, display)
    layout = plan_columns(header, declared, keys)
    schema = pa.schema(
        [
            pa.field(c.out.name, c.ctype.arrow if c.key is None else pa.int64())
            for c in layout.columns
        ]
    )
    hashers = {c.key: KeyHasher(c.key, c.key_types) for c in layout.columns if c.key is not None}
    invalid = {c.out.name: 0 for c in layout.columns if c.key is None}
    ragged: list[str] = []

    def on_invalid_row(row: pacsv.InvalidRow) -> str:
        ragged.append(f"{row.actual_columns} fields where the header has {row.expected_columns}")
        return "error"

    reader_options = pacsv.ReadOptions(
        column_names=header, use_threads=True, block_size=max(block_size >> 2, 1 << 16)
    )
    convert_options = pacsv.ConvertOptions(
        column_types={h: pa.string() for h in header},
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
        null_values=[""],
    )
    parse_options = pacsv.ParseOptions(invalid_row_handler=on_invalid_row)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = _Writer(out_dir, schema, row_group, rows_per_file)
    rows = 0
    try:

        def parse(chunk: bytes) -> pa.RecordBatch:
            try:  # blocks of 1/4 of a piece: parsed on every core
                table = pacsv.read_csv(
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
                table = pacsv.read_csv(
                    pa.BufferReader(chunk),
                    read_options=one_block,
                    parse_options=parse_options,
                    convert_options=convert_options,
                )
            table = table.combine_chunks()
            return pa.RecordBatch.from_arrays(
                [c.chunk(0) if c.num_chunks else pa.array([], c.type) for c in table.columns],
                names=table.column_names,
            )

        chunks = _record_chunks(csv_path, len(_header_bytes(csv_path)), block_size)
        for batch in _batches(chunks, parse):
            arrays = []
            for col in layout.columns:
                if col.key is not None:
                    arrays.append(
                        hashers[col.key].compute([batch.column(i) for i in col.key_indexes])
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
            writer.write(pa.RecordBatch.from_arrays(arrays, schema=schema))
            rows += batch.num_rows
    except pa.ArrowInvalid as err:
        writer.abort()
        _raise_structural(err, csv_path, display, len(header), ragged)
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
    )


def _record_chunks(path: Path, offset: int, size: int) -> Iterator[bytes]:
    """The file after ``offset`` in pieces of about ``size`` bytes, each ending at a record end.

    A piece is cut after the last newline outside quotes (an even number of ``"`` before it;
    every piece starts outside quotes, so counting within the piece is enough). A record
    longer than ``size`` (an enormous field or an unterminated quote) is a structural error.
    """
    with path.open("rb") as raw:
        raw.seek(offset)
        carry = b""
        while data := raw.read(size):
            buffer = carry + data
            cut = buffer.rfind(b"\n")
            while cut != -1 and buffer.count(b'"', 0, cut) % 2:
                cut = buffer.rfind(b"\n", 0, cut)
            if cut == -1:
                if len(buffer) > size:
                    raise pa.ArrowInvalid("a record straddles the block limit")
                carry = buffer
                continue
            yield buffer[: cut + 1]
            carry = buffer[cut + 1 :]
        if carry.strip():
            yield carry


def _batches(
    chunks: Iterator[bytes], parse: Callable[[bytes], pa.RecordBatch], ahead: int = 1
) -> Iterator[pa.RecordBatch]:
    """Parsed, non-empty batches of ``chunks``, read and parsed ``ahead`` pieces ahead.

    A background thread reads the next pieces and parses them (pyarrow parses on both cores
    and releases the GIL) while the caller types and keys this one. The queue is bounded, so
    memory stays a few pieces whatever the file size -- unlike pyarrow's own streaming reader,
    whose read-ahead is not bounded by the consumer (it held 0.5 GiB of a 0.5 GB file).
    """
    queue: Queue[pa.RecordBatch | BaseException | None] = Queue(maxsize=ahead)
    stop = threading.Event()

    def pump() -> None:
        try:
            for chunk in chunks:
                if stop.is_set():
                    return
                batch = parse(chunk)
                if batch.num_rows:
                    queue.put(batch)
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
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a pump waiting on a full queue, then let it end
            with contextlib.suppress(Empty):
                queue.get(timeout=0.05)
        thread.join()


class _Writer:
    """Parquet files of ``rows_per_file`` rows in row groups of exactly ``row_group`` rows.

    Row groups are encoded and compressed on one background thread (pyarrow releases the GIL)
    while the caller types and keys the next batch; at most ``MAX_PENDING`` row groups wait,
    so memory stays bounded. One thread, first in first out: the bytes do not depend on timing.
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
            self._writer = pq.ParquetWriter(str(path), self.schema, **WRITER_OPTIONS)
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
        f"value {source[index].as_py()!r} is not a valid {col.ctype.trino} (invalid_values: fail)",
        file=display,
        line=rows_before + index + 2,
        column=col.out.source or col.out.name,
        hint="fix the value, or set invalid_values: report in lakehook.yaml to load it as NULL",
    )


def _raise_structural(
    err: pa.ArrowInvalid, path: Path, display: str, width: int, ragged: list[str]
) -> None:
    message = str(err)
    if "UTF8" in message or "UTF-8" in message:
        _raise_encoding(path, display)
    if "straddl" in message or "block" in message.lower():
        raise InputError(
            f"a row is longer than {BLOCK_SIZE >> 20} MiB (an enormous field or an "
            "unterminated quote)",
            file=display,
            line=_first_bad_record(path, width)[0],
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


def _raise_encoding(path: Path, display: str) -> None:
    with path.open("rb") as raw:
        for number, line in enumerate(raw, start=1):
            try:
                line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise InputError(
                    f"bytes that are not UTF-8 ({line[err.start : err.start + 4]!r})",
                    file=display,
                    line=number,
                    column=str(err.start + 1),
                    hint="save the file as UTF-8",
                ) from None
    raise InputError("bytes that are not UTF-8", file=display, hint="save the file as UTF-8")


def _first_bad_record(path: Path, width: int) -> tuple[int | None, str]:
    """Physical line and reason of the first record whose field count differs from the header."""
    with path.open(encoding="utf-8-sig", newline="", errors="replace") as text:
        reader = csv.reader(text, strict=True)
        start = 1
        try:
            for record in reader:
                if len(record) != width and any(record):
                    return start, f"{len(record)} fields where the header has {width}"
                start = reader.line_num + 1
        except csv.Error as err:
            return start, f"broken quoting ({err})"
    return None, ""
