"""Parallel streamed transfers (dmf.storage.transfer) against fake blob clients: order, bounds, failures.

No Azurite: the fakes record what the SDK would be asked to do, with delays that make requests overlap.
"""

from __future__ import annotations

import base64
import hashlib
import random
import threading
import time
from dataclasses import dataclass, field

import pytest
from azure.core import MatchConditions

from dmf.storage import transfer

MiB = 2**20


@dataclass
class FakeDest:
    """Records staged blocks and the most Put Blocks in flight at once; can fail one block."""

    delay: float = 0.01
    fail_block: int | None = None
    staged: dict[str, bytes] = field(default_factory=dict)
    committed: list[str] | None = None
    content_md5: bytes | None = None
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stage_block(self, block_id: str, data: bytes, length: int) -> None:
        assert length == len(data)
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay * random.random())
            if self.fail_block is not None and block_id == transfer._block_id(self.fail_block):
                raise OSError("Put Block failed")
            self.staged[block_id] = bytes(data)
        finally:
            with self.lock:
                self.in_flight -= 1

    def commit_block_list(self, blocks, content_settings=None, metadata=None) -> None:
        self.committed = list(blocks)
        self.content_md5 = bytes(content_settings.content_md5)

    def content(self) -> bytes:
        assert self.committed is not None
        return b"".join(self.staged[b] for b in self.committed)


def _chunks(total: int, sizes=(1000, 3 * 1024, 64 * 1024, 5)) -> list[bytes]:
    out, n = [], 0
    rnd = random.Random(7)
    while n < total:
        size = min(rnd.choice(sizes), total - n)
        out.append(rnd.randbytes(size))
        n += size
    return out


def test_blocks_are_recut_to_exact_size_in_order() -> None:
    chunks = _chunks(100_000)
    blocks = list(transfer._blocks(chunks, 4096))
    assert b"".join(blocks) == b"".join(chunks)
    assert all(len(b) == 4096 for b in blocks[:-1])
    assert 0 < len(blocks[-1]) <= 4096
    whole = bytes(4096)
    assert next(transfer._blocks([whole], 4096)) is whole  # a chunk that is a block is not copied


def test_stream_to_blob_stages_in_parallel_within_the_bound_and_commits_in_order() -> None:
    chunks = _chunks(300_000)
    data = b"".join(chunks)
    dest = FakeDest()
    result = transfer.stream_to_blob(iter(chunks), dest, block_size=8192, max_concurrency=3)
    assert dest.content() == data  # block list in source order, whatever order the blocks finished in
    assert len(dest.committed) == -(-len(data) // 8192)
    assert result.size == len(data)
    assert dest.content_md5 == hashlib.md5(data).digest()  # noqa: S324
    assert result.md5 == base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324
    assert 1 < dest.max_in_flight <= 3


def test_stream_to_blob_one_at_a_time_when_asked() -> None:
    dest = FakeDest(delay=0.002)
    transfer.stream_to_blob(iter(_chunks(50_000)), dest, block_size=4096, max_concurrency=1)
    assert dest.max_in_flight == 1


def test_stream_to_blob_holds_a_bounded_number_of_blocks() -> None:
    """The source is never read far ahead of the uploads: at most max_concurrency blocks wait."""
    dest = FakeDest(delay=0.02)
    produced = 0
    lead = []

    def source():
        nonlocal produced
        for _ in range(40):
            lead.append(produced - len(dest.staged))
            produced += 1
            yield b"x" * 1024

    transfer.stream_to_blob(source(), dest, block_size=1024, max_concurrency=4)
    assert len(dest.committed) == 40
    # Blocks read but not yet staged: the 4 in flight, the one in hand and the one being produced.
    assert max(lead) <= 6


def test_failed_block_commits_nothing_and_raises() -> None:
    dest = FakeDest(fail_block=5)
    with pytest.raises(OSError, match="Put Block failed"):
        transfer.stream_to_blob(iter(_chunks(200_000)), dest, block_size=4096, max_concurrency=4)
    assert dest.committed is None


def test_source_failure_commits_nothing() -> None:
    dest = FakeDest()

    def source():
        yield b"a" * 10_000
        raise ConnectionError("download broke")

    with pytest.raises(ConnectionError):
        transfer.stream_to_blob(source(), dest, block_size=4096, max_concurrency=4)
    assert dest.committed is None


def test_empty_source_commits_an_empty_blob() -> None:
    dest = FakeDest()
    result = transfer.stream_to_blob(iter([]), dest)
    assert dest.content() == b""
    assert result.size == 0


@dataclass
class FakeProps:
    size: int
    etag: str


class FakeDownload:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def readall(self) -> bytes:
        return self.data


@dataclass
class FakeSrc:
    data: bytes
    etag: str = '"v1"'
    url: str = "https://acct.blob.core.windows.net/c/b"
    short_range: int | None = None
    calls: list[dict] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get_blob_properties(self, **kw) -> FakeProps:
        self.calls.append({"props": kw})
        return FakeProps(len(self.data), self.etag)

    def download_blob(self, offset: int, length: int, **kw) -> FakeDownload:
        with self.lock:
            self.calls.append({"offset": offset, "length": length, **kw})
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(0.01 * random.random())  # ranges finish out of order
            end = offset + length if offset != self.short_range else offset + length - 1
            return FakeDownload(self.data[offset:end])
        finally:
            with self.lock:
                self.in_flight -= 1


def test_stream_blob_reads_ranges_in_parallel_and_yields_them_in_order() -> None:
    data = random.Random(3).randbytes(100_000)
    src = FakeSrc(data)
    got = list(transfer.stream_blob(src, 4096, max_concurrency=3))
    assert b"".join(got) == data
    assert all(len(c) == 4096 for c in got[:-1])
    assert 1 < src.max_in_flight <= 3
    # Every range is pinned to the version seen first, so two versions can never be mixed.
    ranges = [c for c in src.calls if "offset" in c]
    assert {(c["etag"], c["match_condition"]) for c in ranges} == {('"v1"', MatchConditions.IfNotModified)}


def test_stream_blob_pins_to_the_given_etag() -> None:
    src = FakeSrc(b"abc" * 5000, etag='"v2"')
    list(transfer.stream_blob(src, 4096, etag='"v1"'))
    assert src.calls[0] == {"props": {"etag": '"v1"', "match_condition": MatchConditions.IfNotModified}}
    assert {c["etag"] for c in src.calls[1:]} == {'"v1"'}


def test_stream_blob_refuses_a_short_range() -> None:
    src = FakeSrc(b"z" * 20_000, short_range=8192)
    with pytest.raises(OSError, match="returned 4095 bytes"):
        list(transfer.stream_blob(src, 4096, max_concurrency=2))


def test_stream_blob_stops_reading_when_the_consumer_stops() -> None:
    src = FakeSrc(b"q" * 400_000)
    gen = transfer.stream_blob(src, 4096, max_concurrency=2)
    next(gen)
    gen.close()
    reads = [c for c in src.calls if "offset" in c]
    assert len(reads) <= 4  # the first range, the read-ahead window, and nothing after
