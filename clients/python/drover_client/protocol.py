"""Drover wire protocol, version 1: every message, encoded to frames and decoded back.

Pure Python (no ZeroMQ here). A message is a list of frames (``bytes``):

====== =====================================================================
frame  content
====== =====================================================================
0      the signature, ``b"DRV"`` followed by the version byte ``0x01``
1      the command, one byte (:class:`Command`)
2…     the command's arguments, one per frame
====== =====================================================================

Integers are unsigned and big-endian, text is UTF-8, an item id is 16 bytes. Items,
deliveries and outcomes travel many to a *packed frame*: records laid end to end with no
count, which a reader takes until the frame ends. :func:`encode` closes a packed frame at
:data:`PACKED_FRAME_BYTES` of records (a larger record gets a frame of its own), so a message
stays under the broker's frame limit however many records it carries.

:func:`decode` is strict: it checks the frame count, every frame's size and every enumerated
value before building a message, and raises :class:`ProtocolError` (with the error code to
answer the sender with) for anything else.

``docs/PROTOCOL.md`` in the Drover repository is the reference for the layout; this module
also implements three changes made after that document's version 1 text: ``bye`` carries a
:class:`ByeCode` before its reason, ``welcome`` ends with ``liveness-ms``, and ``hello`` may end
with a fifth frame, ``held``: a worker's held items as a ref list (the layout of ``hand-back``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple, TypeVar, Union

__all__ = [
    "VERSION", "SIGNATURE", "MAX_NAME_BYTES", "ID_BYTES", "PACKED_FRAME_BYTES",
    "Command", "Role", "ErrorCode", "RejectCode", "ByeCode", "Phase", "Status", "DeadLetterKind",
    "FleetState", "Item", "Delivery", "Ref", "Outcome",
    "Hello", "Welcome", "Heartbeat", "Error", "Submit", "Accepted", "Rejected", "Result",
    "Credit", "Deliver", "Done", "HandBack", "Bye", "HandlerState", "Fleet", "StatusRequest", "StatusReply",
    "ExitRequest", "ExitProgress", "ExitFinished", "DeadLetters", "DeadLetterReply",
    "Message", "ProtocolError", "encode", "decode", "queue_name_problem", "id_hex", "id_from_hex",
]

#: The protocol version this module speaks.
VERSION = 2
#: The three bytes before the version byte in frame 0.
MAGIC = b"DRV"
#: Frame 0 of every version-1 message.
SIGNATURE = MAGIC + bytes([VERSION])
#: The longest queue or peer name, in UTF-8 bytes.
MAX_NAME_BYTES = 255
#: Size of an item id.
ID_BYTES = 16
#: Size of a delivery reference: id + 4-byte attempt.
REF_BYTES = 20
#: Size of a fleet state: epoch (8), phase (1), deadline-ms (4).
FLEET_STATE_BYTES = 13
#: Most bytes of records in one packed frame (a larger record gets a frame of its own): well
#: under the broker's frame limit (the larger of its item limit and 1 MiB, plus 64 KiB).
PACKED_FRAME_BYTES = 512 * 1024

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_U16 = struct.Struct(">H")
_FLEET = struct.Struct(">QBI")
_DELIVERY_HEADER = struct.Struct(">16sIII")     # id, attempt, time limit (ms), payload length
_OUTCOME_HEADER = struct.Struct(">16sIBI")      # id, attempt, status, payload length
_ITEM_HEADER = struct.Struct(">16sI")           # id, payload length
_REF = struct.Struct(">16sI")


# MARK: - Enumerations


class Command(IntEnum):
    """The command byte in frame 1."""

    HELLO = 0x01
    WELCOME = 0x02
    HEARTBEAT = 0x03
    ERROR = 0x04
    SUBMIT = 0x10
    ACCEPTED = 0x11
    REJECTED = 0x12
    RESULT = 0x13
    CREDIT = 0x20
    DELIVER = 0x21
    DONE = 0x22
    HAND_BACK = 0x23
    BYE = 0x24
    HANDLER_STATE = 0x25
    FLEET = 0x30
    STATUS_REQUEST = 0x40
    STATUS_REPLY = 0x41
    EXIT_REQUEST = 0x42
    EXIT_PROGRESS = 0x43
    EXIT_FINISHED = 0x44
    DEAD_LETTERS = 0x50
    DEAD_LETTER_REPLY = 0x51


class Role(IntEnum):
    """The role a peer announces in ``hello``."""

    PRODUCER = 1
    WORKER = 2
    CONTROLLER = 3


class ErrorCode(IntEnum):
    """Codes of the ``error`` message (broker or controller → peer)."""

    UNSUPPORTED_VERSION = 1
    MALFORMED = 2
    #: The broker does not know the sender (it restarted, or declared it dead): say hello again.
    UNKNOWN_PEER = 3
    ITEM_TOO_LARGE = 4
    #: The sender's role may not send that command.
    NOT_ALLOWED = 5


class RejectCode(IntEnum):
    """Why the broker refused items in ``rejected``; ``QUEUE_FULL`` and ``STORAGE_UNAVAILABLE``
    are worth retrying later."""

    TOO_LARGE = 1
    QUEUE_FULL = 2
    FLEET_EXITING = 3
    BAD_QUEUE_NAME = 4
    #: The broker cannot store items now (disk full, or its journal failed and it is stopping).
    STORAGE_UNAVAILABLE = 5


class ByeCode(IntEnum):
    """The first argument of ``bye``: why a worker leaves, or the broker's acknowledgement."""

    #: Broker → worker: the goodbye is acknowledged.
    ACKNOWLEDGED = 0
    #: The worker finished its running items.
    DRAINED = 1
    #: The drain deadline passed: the worker handed its running items back.
    DEADLINE_PASSED = 2
    #: The worker stopped at once; the broker redelivers what it held.
    STOPPED = 3


class Phase(IntEnum):
    """The fleet's phase in a fleet state."""

    RUNNING = 0
    EXITING = 1


class Status(IntEnum):
    """How one delivery ended, in an outcome record."""

    SUCCEEDED = 0
    FAILED = 1


class DeadLetterKind(IntEnum):
    """The request kind of ``dead-letters``."""

    LIST = 1
    SHOW = 2
    REPLAY = 3
    PURGE = 4


# MARK: - Shared fields and records


@dataclass(frozen=True)
class FleetState:
    """Whether the fleet runs or exits, with the epoch that orders states (newest wins)."""

    epoch: int
    phase: Phase
    #: How long a worker may keep running its items after it learns of ``EXITING``.
    deadline_ms: int

    @property
    def exiting(self) -> bool:
        """Whether this state tells workers to leave."""
        return self.phase == Phase.EXITING


@dataclass(frozen=True)
class Item:
    """One item as a producer submits it."""

    id: bytes
    payload: bytes


@dataclass(frozen=True)
class Delivery:
    """One delivery of an item to a worker; ``attempt`` is 1 on the first delivery."""

    id: bytes
    attempt: int
    payload: bytes
    #: The producer's limit on running the item, in milliseconds; 0 for none.
    timeout_ms: int = 0


@dataclass(frozen=True)
class Ref:
    """Names one delivery: an item id and the attempt it was delivered under."""

    id: bytes
    attempt: int


@dataclass(frozen=True)
class Outcome:
    """How one delivery ended: result bytes, or (when failed) UTF-8 error text."""

    id: bytes
    attempt: int
    status: Status
    payload: bytes

    @property
    def succeeded(self) -> bool:
        return self.status == Status.SUCCEEDED


# MARK: - Messages


@dataclass(frozen=True)
class Hello:
    """0x01, any peer → broker: the introduction (a producer's keep-alive too)."""

    role: Role
    name: str
    #: The queue a worker serves; empty for other roles.
    queue: str = ""
    #: A worker's handler threads; 0 for other roles.
    concurrency: int = 0
    #: A worker's held items (the optional 5th frame, a ref list): every delivery it answers
    #: for, running or waiting in it, or with an outcome or hand-back it has not sent yet. A
    #: broker that already knows the worker (it registers again after losing contact) returns
    #: every other lease of it to the queue: messages in flight on a connection that dropped
    #: are lost both ways. ``None`` (the frame absent: a peer that does not say) keeps every
    #: lease; an empty list is an empty frame, and names none.
    held: Optional[Sequence[Ref]] = None


@dataclass(frozen=True)
class Welcome:
    """0x02, broker → peer: its limits, the fleet state, and which broker process it is."""

    max_item_bytes: int
    heartbeat_ms: int
    fleet: FleetState
    #: Random per broker process: a new value means it restarted and forgot everything.
    instance: int
    #: How long the broker tolerates silence from a peer; peers treat it as gone after as long.
    liveness_ms: int


@dataclass(frozen=True)
class Heartbeat:
    """0x03, either way between the broker and a registered worker."""


@dataclass(frozen=True)
class Error:
    """0x04, broker/controller → peer. ``code`` is an :class:`ErrorCode`, or the raw number
    when this module does not know it."""

    code: Union[ErrorCode, int]
    text: str


@dataclass(frozen=True)
class Submit:
    """0x10, producer → broker: a batch of items for one queue."""

    queue: str
    #: Flag bit 0: send me each item's outcome.
    want_results: bool
    items: Sequence[Item] = ()
    #: How long each item may run once a worker starts it, in milliseconds; 0 for no limit.
    item_timeout_ms: int = 0


@dataclass(frozen=True)
class Accepted:
    """0x11, broker → producer: these items are held by the broker."""

    ids: Sequence[bytes]


@dataclass(frozen=True)
class Rejected:
    """0x12, broker → producer: nothing of these items was kept."""

    ids: Sequence[bytes]
    code: RejectCode
    reason: str


@dataclass(frozen=True)
class Result:
    """0x13, broker → producer: final outcomes (success, or failure after the last retry)."""

    outcomes: Sequence[Outcome]


@dataclass(frozen=True)
class Credit:
    """0x20, worker → broker: how many more items the worker will take."""

    amount: int


@dataclass(frozen=True)
class Deliver:
    """0x21, broker → worker: items leased to the worker."""

    deliveries: Sequence[Delivery]


@dataclass(frozen=True)
class Done:
    """0x22, worker → broker: outcomes, and the credit their slots free (0 while draining)."""

    credit: int
    outcomes: Sequence[Outcome] = ()


@dataclass(frozen=True)
class HandBack:
    """0x23, worker → broker: deliveries not started (may be empty); also "send no more"."""

    refs: Sequence[Ref] = ()


@dataclass(frozen=True)
class Bye:
    """0x24, worker → broker (codes 1–3) and broker → worker (code 0)."""

    code: ByeCode
    reason: str


@dataclass(frozen=True)
class HandlerState:
    """0x25, worker → broker, optional: how the worker's handler processes fare, for ``drover
    status``. Sent when it changes, and again after each new registration unless all zero."""

    #: Handler processes replaced since the worker started (exited, crashed or timed out).
    restarts: int
    #: Of those, how many in a row without an item answered between.
    deaths_in_a_row: int
    #: Why the latest one ended; empty when none has.
    problem: str = ""


@dataclass(frozen=True)
class Fleet:
    """0x30, controller → broker, broker → worker, controller PUB → workers."""

    state: FleetState


@dataclass(frozen=True)
class StatusRequest:
    """0x40, client → broker or controller."""


@dataclass(frozen=True)
class StatusReply:
    """0x41, broker/controller → client: JSON text."""

    json: str


@dataclass(frozen=True)
class ExitRequest:
    """0x42, client → controller."""

    deadline_ms: int


@dataclass(frozen=True)
class ExitProgress:
    """0x43, controller → client: a JSON object of strings."""

    json: str


@dataclass(frozen=True)
class ExitFinished:
    """0x44, controller → client."""

    succeeded: bool
    json: str


@dataclass(frozen=True)
class DeadLetters:
    """0x50, client → broker. ``limit`` is used by ``LIST`` (0 = all), ``ids`` by the others
    (``SHOW`` takes exactly one; ``REPLAY`` and ``PURGE`` act on all when empty)."""

    kind: DeadLetterKind
    limit: int = 0
    ids: Sequence[bytes] = field(default=())


@dataclass(frozen=True)
class DeadLetterReply:
    """0x51, broker → client: JSON text."""

    json: str


Message = Union[
    Hello, Welcome, Heartbeat, Error, Submit, Accepted, Rejected, Result, Credit, Deliver, Done,
    HandBack, Bye, HandlerState, Fleet, StatusRequest, StatusReply, ExitRequest, ExitProgress, ExitFinished,
    DeadLetters, DeadLetterReply,
]


# MARK: - Errors


class ProtocolError(ValueError):
    """Frames that are not a valid Drover v1 message, with a detail a person can act on.

    ``kind`` is one of ``"not-drover"``, ``"unsupported-version"``, ``"unknown-command"``,
    ``"frame-count"``, ``"frame-size"``, ``"bad-value"``; :attr:`wire_code` is the
    :class:`ErrorCode` to answer the sender with.
    """

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail

    @property
    def wire_code(self) -> ErrorCode:
        if self.kind == "unsupported-version":
            return ErrorCode.UNSUPPORTED_VERSION
        return ErrorCode.MALFORMED


# MARK: - Helpers shared with the roles


def queue_name_problem(name: str) -> Union[str, None]:
    """Why ``name`` cannot be a queue name (non-empty, at most 255 UTF-8 bytes, no spaces or
    control characters), or ``None`` when it is fine."""
    if not name:
        return "the queue name is empty"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"the queue name is longer than {MAX_NAME_BYTES} bytes"
    if any(ch == " " or ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in name):
        return f'the queue name "{name}" contains spaces or control characters'
    return None


def id_hex(item_id: bytes) -> str:
    """An item id as 32 lowercase hex digits, as ``drover dlq`` prints it."""
    return item_id.hex()


def id_from_hex(text: str) -> bytes:
    """Parses 32 hex digits into an item id; raises :class:`ValueError` otherwise."""
    raw = bytes.fromhex(text)
    if len(raw) != ID_BYTES:
        raise ValueError(f"an item id is 32 hex digits, got {text!r}")
    return raw


# MARK: - Encoding


def _name(text: str, what: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > MAX_NAME_BYTES:
        raise ValueError(f"{what} is {len(raw)} bytes of UTF-8; at most {MAX_NAME_BYTES} are allowed")
    return raw


def _id(item_id: bytes) -> bytes:
    if len(item_id) != ID_BYTES:
        raise ValueError(f"an item id is {ID_BYTES} bytes, got {len(item_id)}")
    return bytes(item_id)


def _u32(value: int) -> bytes:
    return _U32.pack(value)


def _fleet(state: FleetState) -> bytes:
    return _FLEET.pack(state.epoch, int(state.phase), state.deadline_ms)


def _id_list(ids: Iterable[bytes]) -> bytes:
    return b"".join(_id(i) for i in ids)


def _ref_list(refs: Iterable[Ref]) -> bytes:
    """A ref list (``hand-back``, and ``hello``'s held items): 20-byte records, id + attempt."""
    return b"".join(_REF.pack(_id(r.id), r.attempt) for r in refs)


_R = TypeVar("_R")


def _packed(records: Sequence[_R], pack: Callable[[_R], bytes]) -> List[bytes]:
    """Packs records into frames of at most :data:`PACKED_FRAME_BYTES` (none when empty); a
    record larger than that bound gets a frame of its own."""
    frames: List[bytes] = []
    current: List[bytes] = []
    size = 0
    for record in records:
        raw = pack(record)
        if size > 0 and size + len(raw) > PACKED_FRAME_BYTES:
            frames.append(b"".join(current))
            current, size = [], 0
        current.append(raw)
        size += len(raw)
    if size > 0:
        frames.append(b"".join(current))
    return frames


def _pack_item(item: Item) -> bytes:
    return _ITEM_HEADER.pack(_id(item.id), len(item.payload)) + bytes(item.payload)


def _pack_delivery(d: Delivery) -> bytes:
    return _DELIVERY_HEADER.pack(_id(d.id), d.attempt, d.timeout_ms, len(d.payload)) + bytes(d.payload)


def _pack_outcome(o: Outcome) -> bytes:
    return _OUTCOME_HEADER.pack(_id(o.id), o.attempt, int(o.status), len(o.payload)) + bytes(o.payload)


def encode(message: Message) -> List[bytes]:
    """The frames of ``message``, starting with the signature frame.

    Raises :class:`ValueError` for values the protocol cannot carry (a name over 255 bytes,
    an id that is not 16 bytes, an integer out of range).
    """
    try:
        return [SIGNATURE, bytes([_command_of(message)])] + _arguments(message)
    except struct.error as error:
        raise ValueError(f"{type(message).__name__}: a number does not fit its field ({error})") from None


def _arguments(m: Message) -> List[bytes]:
    if isinstance(m, Hello):
        hello = [bytes([int(m.role)]), _name(m.name, "the peer name"), _name(m.queue, "the queue name"), _u32(m.concurrency)]
        return hello if m.held is None else hello + [_ref_list(m.held)]
    if isinstance(m, Welcome):
        return [_u32(m.max_item_bytes), _u32(m.heartbeat_ms), _fleet(m.fleet), _U64.pack(m.instance), _u32(m.liveness_ms)]
    if isinstance(m, (Heartbeat, StatusRequest)):
        return []
    if isinstance(m, Error):
        return [_U16.pack(int(m.code)), m.text.encode("utf-8")]
    if isinstance(m, Submit):
        return ([_name(m.queue, "the queue name"), bytes([1 if m.want_results else 0]), _U32.pack(m.item_timeout_ms)]
                + _packed(m.items, _pack_item))
    if isinstance(m, Accepted):
        return [_id_list(m.ids)]
    if isinstance(m, Rejected):
        return [_id_list(m.ids), bytes([int(m.code)]), m.reason.encode("utf-8")]
    if isinstance(m, Result):
        return _packed(m.outcomes, _pack_outcome)
    if isinstance(m, Credit):
        return [_u32(m.amount)]
    if isinstance(m, Deliver):
        return _packed(m.deliveries, _pack_delivery)
    if isinstance(m, Done):
        return [_u32(m.credit)] + _packed(m.outcomes, _pack_outcome)
    if isinstance(m, HandBack):
        return [_ref_list(m.refs)]
    if isinstance(m, Bye):
        return [bytes([int(m.code)]), m.reason.encode("utf-8")]
    if isinstance(m, HandlerState):
        return [_U32.pack(m.restarts), _U32.pack(m.deaths_in_a_row), m.problem.encode("utf-8")]
    if isinstance(m, Fleet):
        return [_fleet(m.state)]
    if isinstance(m, (StatusReply, ExitProgress, DeadLetterReply)):
        return [m.json.encode("utf-8")]
    if isinstance(m, ExitRequest):
        return [_u32(m.deadline_ms)]
    if isinstance(m, ExitFinished):
        return [bytes([1 if m.succeeded else 0]), m.json.encode("utf-8")]
    if isinstance(m, DeadLetters):
        kind = bytes([int(m.kind)])
        if m.kind == DeadLetterKind.LIST:
            return [kind, _u32(m.limit)]
        if m.kind == DeadLetterKind.SHOW:
            if len(m.ids) != 1:
                raise ValueError("dead-letters show takes exactly one id")
            return [kind, _id(m.ids[0])]
        return [kind, _id_list(m.ids)]
    raise TypeError(f"not a Drover message: {m!r}")


_COMMANDS = {
    Hello: Command.HELLO, Welcome: Command.WELCOME, Heartbeat: Command.HEARTBEAT, Error: Command.ERROR,
    Submit: Command.SUBMIT, Accepted: Command.ACCEPTED, Rejected: Command.REJECTED, Result: Command.RESULT,
    Credit: Command.CREDIT, Deliver: Command.DELIVER, Done: Command.DONE, HandBack: Command.HAND_BACK,
    Bye: Command.BYE, HandlerState: Command.HANDLER_STATE, Fleet: Command.FLEET, StatusRequest: Command.STATUS_REQUEST,
    StatusReply: Command.STATUS_REPLY, ExitRequest: Command.EXIT_REQUEST, ExitProgress: Command.EXIT_PROGRESS,
    ExitFinished: Command.EXIT_FINISHED, DeadLetters: Command.DEAD_LETTERS, DeadLetterReply: Command.DEAD_LETTER_REPLY,
}


def _command_of(message: Message) -> Command:
    try:
        return _COMMANDS[type(message)]
    except KeyError:
        raise TypeError(f"not a Drover message: {message!r}") from None


# MARK: - Decoding


class _Arguments:
    """Reads a message's argument frames in order, checking each frame's size before use."""

    def __init__(self, frames: Sequence[bytes], command: Command) -> None:
        self.frames = frames
        self.index = 0
        self.command = command
        self.label = command.name.lower().replace("_", "-")

    def fail(self, kind: str, detail: str) -> ProtocolError:
        return ProtocolError(kind, f"{self.label}: {detail}")

    def expect_count(self, n: int, names: str) -> None:
        if len(self.frames) != n:
            raise self.fail("frame-count", f"expected {n} argument frame(s) ({names}), got {len(self.frames)}")

    def expect_at_least(self, n: int, names: str) -> None:
        if len(self.frames) < n:
            raise self.fail("frame-count", f"expected at least {n} argument frame(s) ({names}), got {len(self.frames)}")

    @property
    def at_end(self) -> bool:
        return self.index >= len(self.frames)

    def raw(self, what: str) -> bytes:
        if self.at_end:
            raise self.fail("frame-count", f"missing {what}")
        frame = bytes(self.frames[self.index])
        self.index += 1
        return frame

    def sized(self, n: int, what: str) -> bytes:
        frame = self.raw(what)
        if len(frame) != n:
            raise self.fail("frame-size", f"{what} must be {n} bytes, got {len(frame)}")
        return frame

    def byte(self, what: str) -> int:
        return self.sized(1, what)[0]

    def u16(self, what: str) -> int:
        return int(_U16.unpack(self.sized(2, what))[0])

    def u32(self, what: str) -> int:
        return int(_U32.unpack(self.sized(4, what))[0])

    def u64(self, what: str) -> int:
        return int(_U64.unpack(self.sized(8, what))[0])

    def text(self, what: str) -> str:
        frame = self.raw(what)
        try:
            return frame.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("bad-value", f"{what} is not valid UTF-8") from None

    def name(self, what: str) -> str:
        text = self.text(what)
        if len(text.encode("utf-8")) > MAX_NAME_BYTES:
            raise self.fail("bad-value", f"{what} is longer than {MAX_NAME_BYTES} bytes")
        return text

    def enum(self, kind: Callable[[int], _R], what: str) -> _R:
        raw = self.byte(what)
        try:
            return kind(raw)
        except ValueError:
            raise self.fail("bad-value", f"unknown {what} {raw}") from None

    def fleet(self) -> FleetState:
        raw = self.sized(FLEET_STATE_BYTES, "the fleet state")
        epoch, phase, deadline = _FLEET.unpack(raw)
        try:
            return FleetState(epoch, Phase(phase), deadline)
        except ValueError:
            raise self.fail("bad-value", f"unknown fleet phase {phase}") from None

    def id_list(self) -> List[bytes]:
        raw = self.raw("the id list")
        if len(raw) % ID_BYTES:
            raise self.fail("frame-size", f"an id list is a multiple of {ID_BYTES} bytes, got {len(raw)}")
        return [raw[at:at + ID_BYTES] for at in range(0, len(raw), ID_BYTES)]

    def ref_list(self) -> List[Ref]:
        raw = self.raw("the delivery list")
        if len(raw) % REF_BYTES:
            raise self.fail("frame-size", f"a delivery list is a multiple of {REF_BYTES} bytes, got {len(raw)}")
        return [Ref(*_REF.unpack_from(raw, at)) for at in range(0, len(raw), REF_BYTES)]

    def records(self, header: struct.Struct, build: Callable[[Tuple[Any, ...], bytes], _R], what: str) -> List[_R]:
        """The remaining frames as packed records: each a fixed header ending in a 4-byte
        payload length, then the payload. A record cut short fails the whole message."""
        out: List[_R] = []
        while not self.at_end:
            frame = self.raw("a packed frame")
            at, end = 0, len(frame)
            while at < end:
                if end - at < header.size:
                    raise self.fail("frame-size", f"a packed {what} record is cut short "
                                                  f"(its header needs {header.size} bytes, {end - at} left)")
                fields = header.unpack_from(frame, at)
                at += header.size
                length = fields[-1]
                if end - at < length:
                    raise self.fail("frame-size", f"a packed {what} record is cut short "
                                                  f"(its payload needs {length} bytes, {end - at} left)")
                out.append(build(fields, frame[at:at + length]))
                at += length
        return out

    def outcomes(self) -> List[Outcome]:
        def build(fields: Tuple[Any, ...], payload: bytes) -> Outcome:
            item_id, attempt, status, _ = fields
            try:
                return Outcome(item_id, attempt, Status(status), payload)
            except ValueError:
                raise self.fail("bad-value", f"unknown outcome status {status}") from None
        return self.records(_OUTCOME_HEADER, build, "outcome")


def decode(frames: Sequence[bytes]) -> Message:
    """Parses ``frames`` (starting at the signature frame; a ROUTER's routing id removed).

    Raises :class:`ProtocolError` when the frames are not a valid version-1 message.
    """
    if len(frames) < 2:
        raise ProtocolError("frame-count", f"a Drover message has at least 2 frames (signature, command); got {len(frames)}")
    signature = bytes(frames[0])
    if len(signature) != 4 or signature[:3] != MAGIC:
        raise ProtocolError("not-drover", 'the first frame is not a Drover signature ("DRV" + version byte)')
    if signature[3] != VERSION:
        raise ProtocolError("unsupported-version",
                            f"protocol version {signature[3]} is not supported; this peer speaks version {VERSION}")
    command_frame = bytes(frames[1])
    if len(command_frame) != 1:
        raise ProtocolError("frame-size", f"the command frame must be 1 byte; got {len(command_frame)}")
    try:
        command = Command(command_frame[0])
    except ValueError:
        raise ProtocolError("unknown-command", f"unknown command 0x{command_frame[0]:02x}") from None
    return _DECODERS[command](_Arguments(frames[2:], command))


def _decode_hello(a: _Arguments) -> Message:
    if len(a.frames) not in (4, 5):
        raise a.fail("frame-count", f"expected 4 argument frames (5 with a worker's held items), got {len(a.frames)}")
    role, name, queue, concurrency = a.enum(Role, "role"), a.name("the name"), a.name("the queue"), a.u32("the concurrency")
    return Hello(role, name, queue, concurrency, None if a.at_end else a.ref_list())


def _decode_welcome(a: _Arguments) -> Message:
    a.expect_count(5, "max-item-bytes, heartbeat-ms, fleet-state, instance, liveness-ms")
    return Welcome(a.u32("max-item-bytes"), a.u32("heartbeat-ms"), a.fleet(), a.u64("the instance"), a.u32("liveness-ms"))


def _decode_error(a: _Arguments) -> Message:
    a.expect_count(2, "code, text")
    raw = a.u16("the error code")
    try:
        code: Union[ErrorCode, int] = ErrorCode(raw)
    except ValueError:
        code = raw  # a code from a newer peer: still worth showing with its text
    return Error(code, a.text("the error text"))


def _decode_submit(a: _Arguments) -> Message:
    a.expect_at_least(3, "queue, flags, item time limit, then packed item frames")
    queue = a.name("the queue")
    flags = a.byte("the flags")
    if flags & ~1:
        raise a.fail("bad-value", f"flags 0x{flags:02x} set bits other than bit 0")
    timeout_ms = a.u32("the item time limit")
    items = a.records(_ITEM_HEADER, lambda f, payload: Item(f[0], payload), "item")
    return Submit(queue, bool(flags & 1), items, timeout_ms)


def _decode_rejected(a: _Arguments) -> Message:
    a.expect_count(3, "ids, code, reason")
    return Rejected(a.id_list(), a.enum(RejectCode, "rejection code"), a.text("the reason"))


def _decode_done(a: _Arguments) -> Message:
    a.expect_at_least(1, "credit, then packed outcome frames")
    credit = a.u32("the credit")
    return Done(credit, a.outcomes())


def _decode_deliver(a: _Arguments) -> Message:
    return Deliver(a.records(_DELIVERY_HEADER, lambda f, payload: Delivery(f[0], f[1], payload, f[2]), "delivery"))


def _decode_bye(a: _Arguments) -> Message:
    a.expect_count(2, "code, reason")
    return Bye(a.enum(ByeCode, "bye code"), a.text("the reason"))


def _decode_handler_state(a: _Arguments) -> Message:
    a.expect_count(3, "restarts, deaths in a row, problem")
    return HandlerState(a.u32("the restarts"), a.u32("the deaths in a row"), a.text("the problem"))


def _decode_dead_letters(a: _Arguments) -> Message:
    a.expect_count(2, "kind, argument")
    kind = a.enum(DeadLetterKind, "dead-letter request kind")
    if kind == DeadLetterKind.LIST:
        return DeadLetters(kind, limit=a.u32("the limit"))
    if kind == DeadLetterKind.SHOW:
        return DeadLetters(kind, ids=[a.sized(ID_BYTES, "an item id")])
    return DeadLetters(kind, ids=a.id_list())


def _no_arguments(build: Callable[[], Message]) -> Callable[[_Arguments], Message]:
    def decoder(a: _Arguments) -> Message:
        a.expect_count(0, "none")
        return build()
    return decoder


def _one_text(build: Callable[[str], Message]) -> Callable[[_Arguments], Message]:
    def decoder(a: _Arguments) -> Message:
        a.expect_count(1, "text")
        return build(a.text("the text"))
    return decoder


def _decode_fleet(a: _Arguments) -> Message:
    a.expect_count(1, "fleet-state")
    return Fleet(a.fleet())


def _decode_accepted(a: _Arguments) -> Message:
    a.expect_count(1, "ids")
    return Accepted(a.id_list())


def _decode_credit(a: _Arguments) -> Message:
    a.expect_count(1, "amount")
    return Credit(a.u32("the amount"))


def _decode_hand_back(a: _Arguments) -> Message:
    a.expect_count(1, "refs")
    return HandBack(a.ref_list())


def _decode_exit_request(a: _Arguments) -> Message:
    a.expect_count(1, "deadline-ms")
    return ExitRequest(a.u32("the deadline"))


def _decode_exit_finished(a: _Arguments) -> Message:
    a.expect_count(2, "succeeded, report")
    return ExitFinished(a.byte("the succeeded flag") != 0, a.text("the report"))


_DECODERS: "dict[Command, Callable[[_Arguments], Message]]" = {
    Command.HELLO: _decode_hello,
    Command.WELCOME: _decode_welcome,
    Command.HEARTBEAT: _no_arguments(Heartbeat),
    Command.ERROR: _decode_error,
    Command.SUBMIT: _decode_submit,
    Command.ACCEPTED: _decode_accepted,
    Command.REJECTED: _decode_rejected,
    Command.RESULT: lambda a: Result(a.outcomes()),
    Command.CREDIT: _decode_credit,
    Command.DELIVER: _decode_deliver,
    Command.DONE: _decode_done,
    Command.HAND_BACK: _decode_hand_back,
    Command.BYE: _decode_bye,
    Command.HANDLER_STATE: _decode_handler_state,
    Command.FLEET: _decode_fleet,
    Command.STATUS_REQUEST: _no_arguments(StatusRequest),
    Command.STATUS_REPLY: _one_text(StatusReply),
    Command.EXIT_REQUEST: _decode_exit_request,
    Command.EXIT_PROGRESS: _one_text(ExitProgress),
    Command.EXIT_FINISHED: _decode_exit_finished,
    Command.DEAD_LETTERS: _decode_dead_letters,
    Command.DEAD_LETTER_REPLY: _one_text(DeadLetterReply),
}
