"""Random descriptors against both cores' shared-ring decoders and a live reader.

    python scripts/fuzz_ring.py [SEED] [COUNT]

Run it under the ASan build (README, Development). The compiled and pure
decoders must agree on every input (result or error message); the reader
must refuse or accept without touching memory outside its ring.
"""

from __future__ import annotations

import os
import random
import struct
import sys
from types import ModuleType
from typing import Any

from chunkwire import _core_c, _core_py
from chunkwire._errors import RingError

EDGES = [0, 1, 2047, 2048, 2049, 4095, 4096, 4097, 2**32 - 1, 2**63, 2**64 - 1]


def main() -> None:
    rng = random.Random(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000

    def value() -> int:
        if rng.random() < 0.5:
            return rng.choice(EDGES)
        return rng.randrange(2 ** rng.choice([8, 13, 32, 64]))

    writer = _core_c.RingWriter(4096, 1)
    reader = _core_c.RingReader(os.dup(writer.fileno()), 1)
    accepted = refused = 0
    for _ in range(count):
        if rng.random() < 0.2:
            data = rng.randbytes(rng.randrange(0, 41))
        else:
            data = struct.pack("<IQQ", rng.choice([0, 1, 2, 2**32 - 1]), value(), value())
        capacity = rng.choice([4096, 1, 2**64 - 1, rng.randrange(2**64)])

        def decode(core: ModuleType) -> tuple[Any, ...]:
            try:
                return ("ok", core.decode_ring_descriptor(data, 1, capacity))  # noqa: B023
            except RingError as exc:
                return ("refused", str(exc))

        compiled, pure = decode(_core_c), decode(_core_py)
        if compiled != pure:
            raise SystemExit(f"twins differ on {data.hex()} / {capacity}: {compiled} {pure}")
        try:
            view = reader.read(data)
        except RingError:
            refused += 1
        else:
            accepted += 1
            view.tobytes()
            reader.release(view)
    writer.close()
    reader.close()
    print(f"{count} descriptors: reader accepted {accepted}, refused {refused}; twins agree")


if __name__ == "__main__":
    main()
