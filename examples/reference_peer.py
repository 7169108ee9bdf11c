#!/usr/bin/env python3
"""A reference peer for fdpass's message wire format (docs/wire-format.md), stdlib only.

usage: reference_peer.py FD stream|seqpacket|dgram echo

FD: an inherited, connected Unix socket of that type. echo: send every message back as
it came (same payload, same fds in order), close our copies; until EOF, or on dgram
(no EOF) until a frame whose payload is b"bye" (echoed too). stderr: a line a message.
"""
import array
import collections
import os
import socket
import struct
import sys

HEADER = struct.Struct('<BBHI')  # tag, reserved, nfds, payload length
TAG_BARE_FD, TAG_FRAME = 0, 1
MAX_FDS = 253  # Linux's SCM_MAX_FD
ANCILLARY_BYTES = socket.CMSG_SPACE(MAX_FDS * 4)
MAX_PACKET_BYTES, STREAM_READ_BYTES = 1 << 20, 1 << 16


class BadMessage(Exception):
    """A message that breaks the format: fatal on a stream, one lost packet otherwise."""


def fds_of(ancdata):
    fds = array.array('i')
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    return list(fds)


def close_all(fds):
    list(map(os.close, fds))


def send_message(sock, data, fds):
    """One message; on a stream the rest of a short write goes without the fds (they went)."""
    wire = b'\0' if not data and len(fds) == 1 else HEADER.pack(TAG_FRAME, 0, len(fds), len(data)) + data
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', fds))] if fds else []
    rest = memoryview(wire)[sock.sendmsg([wire], ancillary):]
    while rest:
        rest = rest[sock.send(rest):]


def recvmsg(sock, size):
    data, ancdata, flags, _ = sock.recvmsg(size, ANCILLARY_BYTES)
    fds = fds_of(ancdata)
    if flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC):
        close_all(fds)
        raise BadMessage('the kernel cut a packet or its fds (MSG_TRUNC/MSG_CTRUNC)')
    return data, fds


class StreamReader:
    """Reassembles messages from a stream: a byte buffer plus a FIFO of received fds."""

    def __init__(self, sock):
        self.sock, self.buffer, self.fds, self.eof = sock, bytearray(), collections.deque(), False

    def next(self):
        """(data, fds), or None at a clean EOF; BadMessage is fatal for the stream."""
        while True:
            message = self.parse()
            if message is not None:
                return message
            if self.eof:
                if self.buffer or self.fds:
                    raise BadMessage(f'EOF inside a message ({len(self.buffer)} bytes, {len(self.fds)} fds left)')
                return None
            data, fds = recvmsg(self.sock, STREAM_READ_BYTES)
            self.fds.extend(fds)  # a message's fds come no later than its first byte
            self.buffer += data
            self.eof = not data

    def parse(self):
        buffer = self.buffer
        if not buffer:
            return None
        if buffer[0] == TAG_BARE_FD:
            if not self.fds:
                raise BadMessage('a bare-fd byte without an fd')
            del buffer[:1]
            return b'', [self.fds.popleft()]
        if buffer[0] != TAG_FRAME:
            raise BadMessage(f'unknown tag 0x{buffer[0]:02x}')
        if len(buffer) >= 2 and buffer[1] != 0:
            raise BadMessage(f'reserved byte 0x{buffer[1]:02x}')
        if len(buffer) < HEADER.size:
            return None
        _, _, nfds, length = HEADER.unpack_from(buffer)
        if len(self.fds) < nfds:  # the header is complete: its fds must have come
            raise BadMessage(f'header wants {nfds} fds, {len(self.fds)} arrived')
        if len(buffer) < HEADER.size + length:
            return None
        data = bytes(buffer[HEADER.size:HEADER.size + length])
        del buffer[:HEADER.size + length]
        return data, [self.fds.popleft() for _ in range(nfds)]


def decode_packet(data, fds):
    """One packet is one message: (data, fds), or BadMessage after closing its fds."""
    if data == b'\0' and len(fds) == 1:
        return b'', fds
    if len(data) >= HEADER.size and data[0] == TAG_FRAME:
        _, reserved, nfds, length = HEADER.unpack_from(data)
        if reserved == 0 and nfds == len(fds) and length == len(data) - HEADER.size:
            return data[HEADER.size:], fds
    close_all(fds)
    raise BadMessage(f'bad packet: {data[:HEADER.size].hex()} ({len(data)} bytes) with {len(fds)} fds')


def messages(sock, kind):
    if kind == 'stream':
        yield from iter(StreamReader(sock).next, None)
        return
    while True:
        try:
            data, fds = recvmsg(sock, MAX_PACKET_BYTES)
            if kind == 'seqpacket' and not data and not fds:
                return  # EOF
            yield decode_packet(data, fds)
        except BadMessage as error:  # on a packet socket only that packet is lost
            print(f'peer: {error}', file=sys.stderr, flush=True)


def main():
    fd, kind, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    if kind not in ('stream', 'seqpacket', 'dgram') or mode != 'echo':
        raise SystemExit(__doc__)
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    for data, fds in messages(sock, kind):
        print(f'peer: {len(data)} bytes, {len(fds)} fds', file=sys.stderr, flush=True)
        send_message(sock, data, fds)
        close_all(fds)
        if kind == 'dgram' and data == b'bye':
            break
    sock.close()


if __name__ == '__main__':
    try:
        main()
    except BadMessage as error:  # a broken stream cannot be read on
        raise SystemExit(f'peer: {error}')
