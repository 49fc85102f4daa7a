from __future__ import annotations
import time, json, uuid
import pika
import pytest
from jobs.settings import Settings
from producers import Client
from tests.helpers import WorkerProcess, message_count

def _publish(settings, queue, actor, kwargs, options=None, mid=None):
    mid = mid or str(uuid.uuid4())
    body = json.dumps({"queue_name": queue, "actor_name": actor, "args": [], "kwargs": kwargs,
                       "options": options or {}, "message_id": mid, "message_timestamp": int(time.time()*1000)})
    conn = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue + ".XQ"})
    ch.basic_publish("", queue, body.encode(), pika.BasicProperties(delivery_mode=2))
    conn.close()
    return mid

def test_repro(settings: Settings, client: Client, start_worker) -> None:
    w = start_worker()
    q = f"{settings.namespace}.default"
    a = _publish(settings, q, "noop", {"sleep": 0}, {"max_retries": 2**31})
    b = _publish(settings, q, "noop", {"sleep": 0, "x\u0000": 1})
    c = _publish(settings, q, "noop", {"sleep": 0, "x\ud800": 1})
    time.sleep(6)
    print("\n".join(w.lines))
    for m in (a, b, c):
        try:
            print(m, client.get(m).info)
        except Exception as e:
            print(m, "ERR", e)
    print(message_count(q), message_count(q+".XQ"))
    assert False
