"""Opening a source file: decompression, its first bytes, text or not, streaming its blocks."""

from __future__ import annotations

import queue
import threading
import zlib

from isal import igzip

from .. import storage
from ..errors import FmprepError, setting
from .rejects import Rejects, _shown

BLOCK_SIZE = 16 << 20       # parse block; also the longest line accepted before a retry
MAX_BLOCK_SIZE = 1 << 30
SNIFF_BYTES = 1 << 16
GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"


class CorruptInput(Exception):
    """The compressed stream is truncated or corrupt."""


class LineTooLong(Exception):
    """A line does not fit in one parse block; the caller retries with larger blocks."""


class _Reader:
    """The minimal read-only file interface Arrow's readers need, over another reader ``f``."""

    def __init__(self, f):
        self._f = f
        self.closed = False

    def readable(self):
        return True

    def seekable(self):
        return False

    def close(self):
        self.closed = True


class _CountingReader(_Reader):
    """Counts the (decompressed) bytes read through it."""

    def __init__(self, f):
        super().__init__(f)
        self.count = 0

    def read(self, n=-1):
        if self.closed:
            # Closed by the source on an error: Arrow's read-ahead thread may still ask for a
            # block; the end of the stream stops it without touching a closed file.
            return b""
        try:
            data = self._f.read(n)
        except (EOFError, OSError, zlib.error) as err:
            # isal raises these for truncated or corrupt gzip; Arrow would wrap them opaquely.
            raise CorruptInput(str(err)) from err
        self.count += len(data)
        return data


class _Prefixed(_Reader):
    """Hands out ``prefix`` (bytes already read, e.g. to sniff the format) before ``f``."""

    def __init__(self, prefix: bytes, f):
        super().__init__(f)
        self._prefix = prefix

    def read(self, n=-1):
        if not self._prefix:
            return self._f.read(n)
        if n is None or n < 0:
            out, self._prefix = self._prefix + self._f.read(), b""
        elif n <= len(self._prefix):
            out, self._prefix = self._prefix[:n], self._prefix[n:]
        else:
            # Fill the whole request, so parse blocks fall where they would without a prefix.
            out, self._prefix = self._prefix + self._f.read(n - len(self._prefix)), b""
        return out



def open_source(url: str, storage_options: dict | None = None, role: str = "source",
                block_size: int | None = None):
    """Open ``url`` and return ``(raw, stream)``: the file and its decompressed bytes.

    gzip is recognised by its magic bytes, not by the name. ``role`` names the setting to fix
    in error messages (``source`` or ``meta``); ``block_size`` is the remote read size
    (s3fs's default of 50 MiB would download that much just to sniff a file).
    """
    if block_size is None:
        raw = storage.open_file(url, "rb", storage_options).open()
    else:
        fs, path = storage.filesystem(url, storage_options)
        raw = fs.open(path, "rb", block_size=block_size)
    head = raw.read(2)
    raw.seek(0)
    if not head:
        raw.close()
        raise FmprepError(f"{url} is empty; point {setting(role)} at a review file (see "
                          f"{setting('format')})")
    if head == GZIP_MAGIC:
        return raw, igzip.GzipFile(fileobj=raw, mode="rb")
    if url.endswith(".gz"):
        raw.close()
        raise FmprepError(f"{url} is named .gz but is not gzip data; re-download it or "
                          "rename it if it is not compressed")
    return raw, raw


def _read_head(url: str, counter: _CountingReader) -> bytes:
    """The first bytes of the decompressed stream (up to :data:`SNIFF_BYTES`)."""
    try:
        head = counter.read(SNIFF_BYTES)
    except CorruptInput as err:
        raise FmprepError(f"{url}: cannot decompress ({err}); the file is truncated or "
                          "corrupt, re-download it") from None
    return head[len(_BOM):] if head.startswith(_BOM) else head


def _first_line(head: bytes) -> bytes:
    """The first line of ``head``, without its line end."""
    return head.split(b"\n", 1)[0].rstrip(b"\r")


class LooksLikeMeta(Exception):
    """Raised by a format's ``sniff`` when the first line is from its metadata file instead."""


# Magic bytes of formats people download reviews in, other than gzip.
_ARCHIVES = ((b"PK\x03\x04", "a zip archive"), (b"BZh", "bzip2-compressed"),
             (b"\xfd7zXZ\x00", "xz-compressed"), (b"\x28\xb5\x2f\xfd", "zstd-compressed"),
             (b"PAR1", "a Parquet file"), (GZIP_MAGIC, "gzip-compressed twice"),
             (b"\xff\xfe", "UTF-16 text"), (b"\xfe\xff", "UTF-16 text"))
_CONTROL_BYTES = bytes(b for b in range(32) if b not in b"\t\n\r\x0c")
_EXPECTED = {
    "source": "a review file (.tsv, .jsonl, u.data, ratings.dat, ratings.csv; plain or .gz, "
              "UTF-8 text)",
    "meta": "a product metadata file (meta_<Category>.jsonl, u.item, movies.dat, movies.csv; "
            "plain or .gz)",
}


def looks_binary(head: bytes) -> bool:
    """True when the start of a decompressed file is not text.

    A NUL byte, or more than one character in ten that is invalid UTF-8 or a control
    character. Text with a few bad bytes (a Latin-1 title, a damaged row) is still text: its
    rows are read and the bad ones counted, not the whole file refused.
    """
    sample = head[:SNIFF_BYTES]
    if not sample:
        return False
    if b"\x00" in sample:
        return True
    controls = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    text = sample.decode("utf-8", "replace")
    return controls + text.count("\ufffd") > len(text) // 10


def _check_text(url: str, head: bytes, compressed: bool, role: str) -> None:
    """A one-line error naming ``role`` when ``head`` is binary data rather than text."""
    if not looks_binary(head):
        return
    what = next((name for magic, name in _ARCHIVES if head.startswith(magic)), None)
    if what is not None:
        fix = ("decompress it once more" if what.startswith("gzip") else
               "save it as UTF-8" if what.startswith("UTF-16") else
               "fmprep reads plain or gzip text: extract or convert it first")
        raise FmprepError(f"{url} is {what} (it starts with {_shown(head, binary=True)}); "
                          f"{fix}, and point {setting(role)} at the result")
    data = "decompresses to binary data" if compressed else "holds binary data"
    raise FmprepError(f"{url} {data}, not UTF-8 text (it starts with "
                      f"{_shown(head, binary=True)}); point {setting(role)} at "
                      f"{_EXPECTED.get(role, 'a text file')}")


def _prefetched(batches, depth: int = 2):
    """Iterate ``batches`` in a background thread, ``depth`` items ahead of the consumer.

    Decompressing and parsing (ISA-L and Arrow, which release the GIL) then overlap with
    validating and writing the previous block: ingest of one file uses two cores. Exceptions
    are raised in the consumer; closing the iterator stops the thread.
    """
    items = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in batches:
                while not stop.is_set():
                    try:
                        items.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        pass
                if stop.is_set():
                    return
            items.put((done, None))
        except BaseException as err:  # handed to the consumer, raised there
            items.put((done, err))

    thread = threading.Thread(target=produce, name="fmprep-parse", daemon=True)
    thread.start()
    try:
        while True:
            item, err = items.get()
            if item is done:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                items.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()


def _line_blocks(stream, block_size: int):
    """Chunks of whole lines of about ``block_size`` bytes, each ending with a newline."""
    rest = b""
    while True:
        data = stream.read(block_size)
        if not data:
            if rest:
                yield rest + b"\n"
            return
        data = rest + data if rest else data
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            if len(data) > MAX_BLOCK_SIZE:
                raise FmprepError(f"a line is longer than {MAX_BLOCK_SIZE >> 20} MiB; clean "
                                  "the file")
            rest = data                   # a line longer than a block: keep reading
            continue
        rest = data[cut:]
        yield data[:cut]


class _Source:
    """An open source file: its format, rejects and tables (one per parse block).

    ``detect(url, head, requested)`` returns the :class:`fmprep.sources.Format` to read the
    file with, from its first bytes; ``role`` (``source`` or ``meta``) names the setting in
    error messages.
    """

    def __init__(self, url, requested, storage_options, block_size, role, detect,
                 read_size=None):
        self.url = url
        self._generators = []
        self.raw, self._stream = open_source(url, storage_options, role, read_size)
        try:
            self.counter = _CountingReader(self._stream)
            self.head = _read_head(url, self.counter)
            _check_text(url, self.head, self._stream is not self.raw, role)
            self.spec = detect(url, self.head, requested)
        except BaseException:
            self.close()
            raise
        self.format = self.spec.name
        self.block_size = block_size
        self.rejects = Rejects(self.spec.reasons)

    @property
    def bytes_read(self) -> int:
        """Decompressed bytes read so far."""
        return self.counter.count

    def position(self) -> int:
        """Bytes of the (possibly compressed) file consumed so far, for progress."""
        return self.raw.tell()

    def close(self):
        """Stop reading: the parse thread is joined and the file closed, even mid-stream.

        On an error (a full disk while writing a part, a bad row) the tables may be left
        half-read; without this their parse thread would run on unseen, and Arrow's
        read-ahead would keep pulling blocks from this stream (it now gets the end of it).
        """
        counter = getattr(self, "counter", None)
        if counter is not None:
            counter.closed = True
        for gen in self._generators:
            try:
                gen.close()           # runs _prefetched's finally: stop, drain, join
            except ValueError:        # running in another thread: it stops at end of stream
                pass
        self._generators.clear()
        self._stream.close()
        self.raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def tables(self):
        """Validated tables, one per parse block, in the schema of the file's kind.

        :data:`fmprep.sources.REVIEWS_SCHEMA` for a review file,
        :data:`fmprep.sources.TITLES_SCHEMA` for a metadata file.
        """
        spec = self.spec
        gen = self._guarded(spec.read(spec, self.url, self.head, self.counter,
                                      self.block_size, self.rejects))
        self._generators.append(gen)
        return gen

    def _guarded(self, reader):
        try:
            yield from reader
        except CorruptInput as err:
            raise FmprepError(f"{self.url}: cannot decompress ({err}); the file is truncated "
                              "or corrupt, re-download it") from None
