"""``new_id``: UUID version 7 strings, ordered by creation, distinct across ``fork``."""

from __future__ import annotations

import os
import time
import uuid

from brokerkernel.kernel.storage.models import new_id


def test_ids_are_version_7_and_sort_in_the_order_they_were_made() -> None:
    before_ms = time.time_ns() // 1_000_000
    ids = [new_id() for _ in range(10_000)]
    after_ms = time.time_ns() // 1_000_000

    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    first, last = uuid.UUID(ids[0]), uuid.UUID(ids[-1])
    assert str(first) == ids[0] and (first.version, first.variant) == (7, uuid.RFC_4122)
    assert before_ms <= first.int >> 80 <= last.int >> 80 <= after_ms


def test_a_forked_process_makes_other_ids() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids to the parent, then leave at once
        os.write(write_end, "\n".join(new_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write_end)
    mine = {new_id() for _ in range(100)}
    with os.fdopen(read_end) as pipe:
        theirs = set(pipe.read().split("\n"))
    os.waitpid(pid, 0)
    assert len(theirs) == 100 and not mine & theirs
