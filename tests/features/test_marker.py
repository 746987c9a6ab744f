"""The materialization marker: writers that finish together never drop each other's snapshots."""

from __future__ import annotations

import threading

from featurestore.marker import add_to_marker, merge_marker, parse_marker, read_marker_raw
from services.connections import redis_client


def test_merge_keeps_what_is_there_and_sets_end(redis_url):
    client = redis_client(redis_url)
    try:
        add_to_marker(client, "p", redis_url, ["s1"])
        value = merge_marker(client, "p", redis_url, ["s2"], end="2026-01-01T00:00:00+00:00")
        assert value["snapshot_ids"] == ["s1", "s2"] and value["end"].startswith("2026-01-01")
        pushed = add_to_marker(client, "p", redis_url, ["s3"])
        assert pushed["pushed"] == ["s3"] and pushed["end"] == value["end"]  # end kept
        assert parse_marker(read_marker_raw(client, "p", redis_url)) == pushed
    finally:
        client.close()


def test_concurrent_pushes_and_materializations_lose_no_snapshot(redis_url):
    barrier = threading.Barrier(4)

    def writer(index: int) -> None:
        client = redis_client(redis_url)
        try:
            barrier.wait()
            for i in range(25):
                sid = f"w{index}-{i}"
                if index % 2:
                    add_to_marker(client, "p", redis_url, [sid])
                else:
                    merge_marker(client, "p", redis_url, [sid], end=f"end-{index}")
        finally:
            client.close()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client = redis_client(redis_url)
    try:
        marker = parse_marker(read_marker_raw(client, "p", redis_url))
    finally:
        client.close()
    assert len(marker["snapshot_ids"]) == 100
