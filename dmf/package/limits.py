"""Size, count and ratio limits applied when building, validating and unpacking packages.

``Limits()`` holds the defaults, and they are the only copy: the app settings (``dmf.settings``) take their
defaults from ``DEFAULT_LIMITS``, and ``docs/INBOUND.md`` ("Limits") lists them (a test keeps the three in
step). Every limit applies to the whole input: across all entries of an archive, and across a batch zip and
the archives inside it.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024
GiB = 1024 * MiB


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits for one route. The defaults suit F&O's documented behaviour and a 1.5 GB Functions worker.

    ``max_rows_per_package`` / ``max_bytes_per_package`` bound one package's data file (rows excluding the
    header; bytes uncompressed in the target encoding): ``build`` splits on them, ``inspect`` reports
    ``TOO_LARGE`` above them. Microsoft advises splitting large imports, and the 256 MB default matches
    the default DMF blob size cap.
    """

    # PACKAGE_MAX_ROWS / PACKAGE_MAX_BYTES
    max_rows_per_package: int | None = 100_000
    max_bytes_per_package: int | None = 256 * MiB
    # Zip bomb guards, for archives from outside (a dropped package, a batch zip and the archives in it, a
    # workbook): ZIP_MAX_UNCOMPRESSED_BYTES is the expanded size of the whole input; ZIP_MAX_RATIO bounds
    # the ratio of every entry (whatever its size) and of the whole input; ZIP_MAX_ENTRIES counts the
    # entries of the whole input (a batch zip's own and those of the archives in it).
    max_uncompressed_bytes: int = 8 * GiB
    max_ratio: float = 200.0
    max_entries: int = 10_000
    # FILE_NAME_MAX_CHARS: longest zip entry name, and longest raw file name (it names the data file in
    # the package). 255 is the file name limit of NTFS, where F&O unpacks packages.
    max_name_chars: int = 255
    # RECORD_MAX_CHARS: longest record (row) of a delimited file, in characters; delimited files are read
    # one record at a time, so this bounds memory.
    max_record_chars: int = 1 * MiB
    # INPUT_MAX_BYTES: a raw input file larger than this is refused by build.
    max_input_bytes: int = 16 * GiB
    # PACKAGE_FILE_MAX_BYTES: a package (or batch zip) file larger than this is refused before it is opened.
    max_package_file_bytes: int = 2 * GiB
    # Manifest.xml / PackageHeader.xml are small; a huge one is an attack or a mistake.
    max_xml_bytes: int = 64 * MiB
    # Rows after which the duplicate-key check spills key hashes to disk (bounded memory).
    key_spill_threshold: int = 200_000
    # At most this many DUPLICATE_KEY (and similar per-row) problems are listed; the rest are counted.
    max_row_problems: int = 20

    def __post_init__(self) -> None:
        for name in ("max_rows_per_package", "max_bytes_per_package"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be at least 1 (or None for no limit)")
        if self.max_ratio <= 1:
            raise ValueError("max_ratio must be above 1")
        for name in ("max_entries", "max_name_chars", "max_record_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


DEFAULT_LIMITS = Limits()
