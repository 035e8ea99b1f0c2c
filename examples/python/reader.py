"""A Python process reading and writing a struct in a shmutils segment.

Usage: python3 reader.py NAME OFFSET
  NAME    the segment ("/my-app"; Python's SharedMemory takes it without the "/")
  OFFSET  where the struct reading is (ref.offset in JavaScript):
          struct reading { uint32_t id; double celsius; char place[16]; uint32_t seen; };
Run by examples/python-interop.mjs.
"""
import struct
import sys
from multiprocessing import resource_tracker, shared_memory

# The C layout (docs/c-structs.md): natural alignment, little-endian, 4 bytes of padding
# after `id` so that `celsius` is 8-aligned; sizeof == 40.
READING = struct.Struct("<I4xd16sI4x")

name, offset = sys.argv[1], int(sys.argv[2])
shm = shared_memory.SharedMemory(name=name.lstrip("/"))
# Python < 3.13 registers every segment it attaches to and unlinks it when this process
# exits: it is not ours to remove. (Python >= 3.13: SharedMemory(name, track=False).)
resource_tracker.unregister(shm._name, "shared_memory")
try:
    if bytes(shm.buf[:8]) != b"SHMUTILS":
        sys.exit("not a shmutils segment")
    if offset < 256 or offset + READING.size > shm.size:
        sys.exit("offset outside the segment")
    rid, celsius, place, seen = READING.unpack_from(shm.buf, offset)
    place = place.split(b"\0", 1)[0].decode()
    print(f"Python read reading #{rid}: {celsius} °C in {place}")
    struct.pack_into("<I", shm.buf, offset + 32, seen + 1)  # reading.seen += 1 (offset 32)
finally:
    shm.close()
