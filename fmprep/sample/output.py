"""Writing the generated files: reproducible gzip, atomic on local paths."""

from __future__ import annotations

import os
import uuid

import fsspec
from isal import igzip


def _write_stream_atomically(path, storage_options, write) -> None:
    """Call ``write(raw)`` with a binary file that appears at ``path`` only once complete."""
    options = storage_options or {}
    fs, fs_path = fsspec.core.url_to_fs(str(path), **options)
    if "file" in fs.protocol or "local" in fs.protocol:
        parent = os.path.dirname(os.path.abspath(fs_path))
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".{os.path.basename(fs_path)}.{uuid.uuid4().hex}.tmp")
        try:
            with fsspec.open(tmp, "wb") as raw:
                write(raw)
            os.replace(tmp, fs_path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    else:
        with fsspec.open(str(path), "wb", **options) as raw:
            write(raw)


def _gzip_lines(path, storage_options, compresslevel, chunks) -> None:
    """Write the lines of each list ``chunks`` yields as a reproducible gzip file."""
    def write(raw):
        # mtime=0 and the final name in the header: same input, same compressed bytes.
        with igzip.IGzipFile(filename=os.path.basename(str(path)), mode="wb",
                             compresslevel=compresslevel, fileobj=raw, mtime=0) as gz:
            for lines in chunks:
                # Encode a slice at a time: one string for the whole chunk would double the peak.
                for i in range(0, len(lines), 8192):
                    gz.write(("\n".join(lines[i:i + 8192]) + "\n").encode("utf-8"))
                del lines   # before the next chunk is made: one chunk in memory, not two

    _write_stream_atomically(path, storage_options, write)
