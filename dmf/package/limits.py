"""Size, count and ratio limits applied when building, validating and unpacking packages."""

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

    max_rows_per_package: int | None = 1_000_000
    max_bytes_per_package: int | None = 256 * MiB
    # Zip bomb guards: sum of uncompressed sizes, and the ratio of any single entry above ratio_min_bytes.
    max_uncompressed_bytes: int = 4 * GiB
    max_ratio: float = 500.0
    ratio_min_bytes: int = 1 * MiB
    max_entries: int = 1000
    # A raw input file larger than this is refused by build (it would make more than a day of imports).
    max_input_bytes: int = 16 * GiB
    # A package (or batch zip) file larger than this is refused before it is opened.
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
