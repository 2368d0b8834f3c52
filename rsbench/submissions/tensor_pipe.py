"""Messages between rsbench and a process it does not trust: a JSON header and raw tensor bytes, over a pipe.

No pickle crosses: a message is the lengths of its header and body, a JSON header (which names each
tensor's dtype, among three, and shape) and the tensors' bytes, read back with `torch.frombuffer`.
Anything else (an unknown dtype, a shape the bytes do not fill, bytes left over, a header or body over
its limit) is a ValueError. On rsbench's end every wait has a deadline, so a process that stops
answering (or reading) ends the session instead of blocking it.
"""

from __future__ import annotations

import json
import math
import os
import select
import struct
import time
from collections.abc import Sequence
from typing import Any

import torch

FRAME = struct.Struct("<II")
"""A message: the lengths of its JSON header and of its tensor bytes, then both."""
MAX_HEADER = 1 << 20
MAX_BODY = 256 << 20
"""Largest header and tensor bytes read (a batch of 1000 digits is 256 KiB, of 1000 CIFAR images 12 MiB)."""
DTYPES = {"float32": torch.float32, "int64": torch.int64, "uint8": torch.uint8}


def encode(header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> bytes:
    """One message: `header` as JSON (plus the tensors' names, dtypes and shapes), then the tensors' bytes."""
    listed, body = [], []
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        listed.append([name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape)])
        body.append(tensor.numpy().tobytes())
    head, data = json.dumps({**header, "tensors": listed}).encode(), b"".join(body)
    return FRAME.pack(len(head), len(data)) + head + data


def decode(head: bytes, data: bytes) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The header and tensors of a message; ValueError when it is not one."""
    header = json.loads(head)
    if not isinstance(header, dict) or not isinstance(header.get("tensors", []), list):
        raise ValueError("not a message")
    tensors, offset = {}, 0
    for name, dtype, shape in header.pop("tensors", []):
        if dtype not in DTYPES or not isinstance(shape, list) or any(type(s) is not int or s < 0 for s in shape):
            raise ValueError("a malformed tensor")
        kind = DTYPES[dtype]
        size = math.prod(shape) * torch.empty((), dtype=kind).element_size()
        if offset + size > len(data):
            raise ValueError("tensors longer than the message")
        raw = bytearray(data[offset:offset + size])
        tensors[str(name)] = torch.frombuffer(raw, dtype=kind).reshape(shape) if size else torch.empty(shape,
                                                                                                        dtype=kind)
        offset += size
    if offset != len(data):
        raise ValueError("bytes left over")
    return header, tensors


class Pipe:
    """Framed messages over a pair of file descriptors; with a deadline (time.monotonic), every wait is bounded."""

    def __init__(self, read_fd: int, write_fd: int, deadline: float | None = None) -> None:
        self.read_fd, self.write_fd, self.deadline = read_fd, write_fd, deadline
        self.buffer = bytearray()
        if deadline is not None:
            os.set_blocking(read_fd, False)
            os.set_blocking(write_fd, False)

    def _wait(self, fd: int, writing: bool) -> None:
        if self.deadline is None:
            return  # blocking descriptors: the call itself waits
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        ready = select.select([], [fd], [], left) if writing else select.select([fd], [], [], left)
        if not any(ready):
            raise TimeoutError

    def send(self, header: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None) -> None:
        view = memoryview(encode(header, tensors or {}))
        while view:
            try:
                view = view[os.write(self.write_fd, view[:1 << 16]):]
            except BlockingIOError:
                self._wait(self.write_fd, True)

    def _read(self, size: int) -> bytes:
        """The next `size` bytes; reads whatever is there (at least what is missing), keeping the rest for later."""
        while len(self.buffer) < size:
            try:
                chunk = os.read(self.read_fd, max(size - len(self.buffer), 1 << 16))
            except BlockingIOError:
                self._wait(self.read_fd, False)
                continue
            if not chunk:
                raise EOFError
            self.buffer += chunk
        taken = bytes(self.buffer[:size])
        del self.buffer[:size]
        return taken

    def receive(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        head, body = FRAME.unpack(self._read(FRAME.size))
        if head > MAX_HEADER or body > MAX_BODY:
            raise ValueError("a message over the size limit")
        return decode(self._read(head), self._read(body))


def states(generators: Sequence[torch.Generator | None]) -> dict[str, torch.Tensor]:
    """The states of the generators given (None: unseeded), as one tensor, to cross with a request."""
    seeded = [g for g in generators if g is not None]
    return {"states": torch.stack([g.get_state() for g in seeded])} if seeded else {}
