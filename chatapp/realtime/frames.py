"""What goes on the wire: frames encoded (and compressed) once for every socket.

permessage-deflate, which simple-websocket accepts whenever a browser offers it: each
frame is compressed once, with a fresh compressor (no context taken over between
messages), so no socket keeps a compressor (about 256 KB of zlib state each), and a
frame compressed once is valid on every socket that negotiated the extension. The
browser's decoder may keep its window; it only ever finds data it does not need.
"""

from __future__ import annotations

import zlib

from wsproto.extensions import PerMessageDeflate

# Close codes (RFC 6455 and the IANA registry).
NORMAL = 1000
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
SERVICE_RESTART = 1012
TRY_AGAIN_LATER = 1013

# Frames shorter than this go out uncompressed (the threshold of Node's ws library): a
# chat message's push is ~500 bytes, where deflate saves ~200 and every reader pays an
# inflate. Connect snapshots and sidebars, many kilobytes, are compressed.
COMPRESS_MIN_BYTES = 1024

def _header(opcode_byte: int, size: int) -> bytes:
    """The header of an unmasked (server-to-client) frame."""
    if size < 126:
        return bytes((opcode_byte, size))
    if size < 65536:
        return bytes((opcode_byte, 126)) + size.to_bytes(2, "big")
    return bytes((opcode_byte, 127)) + size.to_bytes(8, "big")


class Frame:
    """One text message for any number of sockets, with its wire bytes built once.

    wire(0) is the plain frame; wire(bits) the frame deflated with that window size, for
    sockets that negotiated permessage-deflate. Each form is built on first use and then
    shared, so fan-out to a thousand sockets encodes (and compresses) once.
    """

    __slots__ = ("text", "_wire")

    def __init__(self, text: str):
        self.text = text
        self._wire: dict[int, bytes] = {}

    def wire(self, window_bits: int) -> bytes:
        data = self._wire.get(window_bits)
        if data is None:
            payload = self.text.encode()
            opcode = 0x81  # FIN + text
            if window_bits and len(payload) >= COMPRESS_MIN_BYTES:
                deflate = zlib.compressobj(6, zlib.DEFLATED, -window_bits, 8)
                packed = deflate.compress(payload) + deflate.flush(zlib.Z_SYNC_FLUSH)
                packed = packed[:-4]  # RFC 7692: drop the empty block's 00 00 ff ff
                if len(packed) < len(payload):
                    payload, opcode = packed, 0xC1  # FIN + RSV1 (compressed) + text
            data = self._wire[window_bits] = _header(opcode, len(payload)) + payload
        return data


PING = _header(0x89, 0)


def negotiated_window_bits(ws) -> int:
    """The deflate window this socket's frames may use; 0 without permessage-deflate."""
    try:
        extensions = ws.ws.connection._proto.extensions
    except AttributeError:
        return 0
    for extension in extensions:
        if isinstance(extension, PerMessageDeflate) and extension.enabled():
            return int(extension.server_max_window_bits)
    return 0


