"""The live metrics publisher: JSON on the channel, state hash, never blocking on a bad Redis."""

from __future__ import annotations

import json
import math
import os
import signal
import threading

from services.connections import redis_client
from services.local import stop_process
from training.live import LivePublisher, channel_name, state_key


def _collect(pubsub, n: int) -> list[dict]:
    out = []
    for _ in range(50):
        msg = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if msg is not None:
            out.append(json.loads(msg["data"]))
            if len(out) == n:
                break
    return out


def test_messages_are_json_on_the_channel_and_state_is_kept(redis_url):
    client = redis_client(redis_url)
    pubsub = client.pubsub()
    pubsub.subscribe(channel_name("abc"))
    try:
        with LivePublisher(redis_url, "abc") as live:
            assert live.publish("start", status="running", epoch=0, step=0)
            assert live.publish("step", epoch=0, step=10, loss=0.5, lr=math.nan)
            assert live.publish("epoch", epoch=0, step=20, val_nrmse=0.7, is_best=True)
        messages = _collect(pubsub, 3)
        state = client.hgetall(state_key("abc"))
        ttl = client.ttl(state_key("abc"))
    finally:
        pubsub.close()
        client.close()
    assert [m["type"] for m in messages] == ["start", "step", "epoch"]
    assert messages[1]["loss"] == 0.5 and messages[1]["lr"] is None  # NaN -> null, valid JSON
    assert all(m["experiment_id"] == "abc" and "time" in m for m in messages)
    assert state[b"status"] == b"running" and state[b"epoch"] == b"0"
    assert json.loads(state[b"last_epoch"])["val_nrmse"] == 0.7
    assert json.loads(state[b"last"])["type"] == "epoch"
    assert 0 < ttl <= 7 * 24 * 3600
    assert live.stats()["sent"] == 3


def test_a_full_queue_drops_instead_of_waiting(start_local_redis):
    server = start_local_redis()
    os.kill(server.pid, signal.SIGSTOP)  # accepts connections, never answers
    try:
        live = LivePublisher(server.uri, "hung", queue_size=4, timeout_s=0.3).start()
        results = []
        worker = threading.Thread(
            target=lambda: results.extend(live.publish("step", step=i) for i in range(200))
        )
        worker.start()
        worker.join(60)
        assert not worker.is_alive(), "publish() must never block the training loop"
        live.close(timeout_s=2.0)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    assert results.count(False) > 0 and live.dropped >= results.count(False)
    assert live.stats()["sent"] == 0


def test_unreachable_redis_is_counted_not_raised(start_local_redis):
    server = start_local_redis()
    stop_process(server.pid)
    live = LivePublisher(server.uri, "gone", backoff_s=0.0).start()
    for i in range(5):
        live.publish("step", step=i)
    live.close()
    assert live.sent == 0 and live.errors >= 1 and live.dropped == 5
    assert "ConnectionError" in (live.last_error or "")


def test_disabled_publisher_drops_everything():
    live = LivePublisher(None, "off").start()
    assert live.publish("step", step=1) is False
    live.close()
    assert live.dropped == 1
