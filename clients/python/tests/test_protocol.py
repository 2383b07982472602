"""The codec, byte for byte: every message round-trips, the layout matches the Swift
reference's pinned bytes (Tests/DroverProtocolTests/CodecTests.swift), and malformed frames are
refused with the right kind of error."""

from __future__ import annotations

import unittest

import harness  # noqa: F401  (puts drover_client on the path)
from drover_client import protocol as p

ID1 = bytes([1, 2, 3, 4, 5, 6, 7, 8]) + (42).to_bytes(8, "big")
ID2 = (9).to_bytes(8, "big") + b"\xff" * 8
FLEET = p.FleetState(1_795_000_000_000, p.Phase.EXITING, 30_000)

SAMPLES = [
    p.Hello(p.Role.WORKER, "host:12", "images", 8),
    p.Hello(p.Role.PRODUCER, "p"),
    p.Hello(p.Role.WORKER, "host:12", "images", 8, held=[p.Ref(ID1, 1), p.Ref(ID2, 7)]),
    p.Hello(p.Role.WORKER, "host:12", "images", 8, held=[]),
    p.Welcome(1 << 20, 1000, FLEET, 0xDEADBEEF, 3000),
    p.Heartbeat(),
    p.Error(p.ErrorCode.UNKNOWN_PEER, "say hello"),
    p.Submit("q", True, [p.Item(ID1, b"a"), p.Item(ID2, b"")]),
    p.Submit("q", False, []),
    p.Submit("q", True, [p.Item(ID1, b"x")], 30_000),
    p.Accepted([ID1, ID2]),
    p.Rejected([ID1], p.RejectCode.QUEUE_FULL, "full"),
    p.Result([p.Outcome(ID1, 2, p.Status.FAILED, b"boom")]),
    p.Credit(17),
    p.Deliver([p.Delivery(ID1, 1, b"\x00\xff"), p.Delivery(ID2, 3, b"", 500)]),
    p.Done(2, [p.Outcome(ID2, 1, p.Status.SUCCEEDED, b"\x01\x02\x03")]),
    p.Done(0, []),
    p.HandBack([p.Ref(ID1, 4)]),
    p.HandBack([]),
    p.Bye(p.ByeCode.DRAINED, "fleet exit"),
    p.Bye(p.ByeCode.ACKNOWLEDGED, "ok"),
    p.HandlerState(7, 3, "the handler process exited with status 3"),
    p.Fleet(FLEET),
    p.StatusRequest(),
    p.StatusReply("{}"),
    p.ExitRequest(5000),
    p.ExitProgress('{"event":"waiting"}'),
    p.ExitFinished(True, "{}"),
    p.DeadLetters(p.DeadLetterKind.LIST, limit=10),
    p.DeadLetters(p.DeadLetterKind.SHOW, ids=[ID1]),
    p.DeadLetters(p.DeadLetterKind.REPLAY, ids=[ID1, ID2]),
    p.DeadLetters(p.DeadLetterKind.PURGE, ids=[]),
    p.DeadLetterReply("[]"),
]


class RoundTripTests(unittest.TestCase):
    def test_every_message_survives_encode_then_decode(self) -> None:
        for message in SAMPLES:
            with self.subTest(message=type(message).__name__):
                frames = p.encode(message)
                self.assertEqual(frames[0], b"DRV\x02")
                self.assertEqual(len(frames[1]), 1)
                decoded = p.decode(frames)
                self.assertEqual(type(decoded), type(message))
                self.assertEqual(p.encode(decoded), frames)

    def test_hello_carries_held_items_only_when_given(self) -> None:
        cases = [
            (p.Hello(p.Role.WORKER, "w", "q", 4), 4, None),
            (p.Hello(p.Role.WORKER, "w", "q", 4, held=[p.Ref(ID1, 1), p.Ref(ID2, 7)]), 5, [p.Ref(ID1, 1), p.Ref(ID2, 7)]),
            (p.Hello(p.Role.WORKER, "w", "q", 4, held=[]), 5, []),
        ]
        for message, arguments, held in cases:
            with self.subTest(held=held):
                frames = p.encode(message)
                self.assertEqual(len(frames) - 2, arguments)
                decoded = p.decode(frames)
                self.assertEqual((decoded.role, decoded.name, decoded.queue, decoded.concurrency),
                                 (p.Role.WORKER, "w", "q", 4))
                self.assertEqual(decoded.held, held)
                self.assertEqual(decoded, message)

    def test_every_command_has_its_code(self) -> None:
        codes = {type(m): p.encode(m)[1][0] for m in SAMPLES}
        self.assertEqual(codes[p.Hello], 0x01)
        self.assertEqual(codes[p.Welcome], 0x02)
        self.assertEqual(codes[p.Submit], 0x10)
        self.assertEqual(codes[p.Done], 0x22)
        self.assertEqual(codes[p.Bye], 0x24)
        self.assertEqual(codes[p.HandlerState], 0x25)
        self.assertEqual(codes[p.Fleet], 0x30)
        self.assertEqual(codes[p.DeadLetterReply], 0x51)


class LayoutTests(unittest.TestCase):
    def test_deliveries_pack_into_one_frame_with_big_endian_integers(self) -> None:
        frames = p.encode(p.Deliver([p.Delivery(ID1, 0x0A0B0C0D, b"\x09", 0x01020304), p.Delivery(ID2, 1, b"")]))
        self.assertEqual(len(frames), 3)
        self.assertEqual(frames[2], bytes([1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 42, 0x0A, 0x0B, 0x0C, 0x0D, 1, 2, 3, 4, 0, 0, 0, 1, 9])
                         + bytes([0, 0, 0, 0, 0, 0, 0, 9]) + b"\xff" * 8 + bytes([0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]))

    def test_outcome_record_layout(self) -> None:
        frames = p.encode(p.Done(1, [p.Outcome(ID1, 2, p.Status.FAILED, b"\x07\x08")]))
        self.assertEqual(frames[2], b"\x00\x00\x00\x01")
        self.assertEqual(frames[3], bytes([1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 42, 0, 0, 0, 2, 1, 0, 0, 0, 2, 7, 8]))
        self.assertEqual(p.encode(p.Credit(258))[2], bytes([0, 0, 1, 2]))

    def test_welcome_ends_with_liveness_and_bye_starts_with_its_code(self) -> None:
        frames = p.encode(p.Welcome(1 << 20, 1000, FLEET, 7, 3000))
        self.assertEqual(len(frames), 7)
        self.assertEqual(frames[4], (1_795_000_000_000).to_bytes(8, "big") + b"\x01" + (30_000).to_bytes(4, "big"))
        self.assertEqual(frames[5], (7).to_bytes(8, "big"))
        self.assertEqual(frames[6], (3000).to_bytes(4, "big"))
        self.assertEqual(p.encode(p.Bye(p.ByeCode.DEADLINE_PASSED, "late")), [b"DRV\x02", b"\x24", b"\x02", b"late"])

    def test_hello_and_submit_frames(self) -> None:
        self.assertEqual(p.encode(p.Hello(p.Role.WORKER, "w", "q", 4)),
                         [b"DRV\x02", b"\x01", b"\x02", b"w", b"q", b"\x00\x00\x00\x04"])
        self.assertEqual(p.encode(p.Hello(p.Role.WORKER, "w", "q", 4, held=[p.Ref(ID1, 1), p.Ref(ID2, 0x0A0B0C0D)])),
                         [b"DRV\x02", b"\x01", b"\x02", b"w", b"q", b"\x00\x00\x00\x04",
                          ID1 + b"\x00\x00\x00\x01" + ID2 + b"\x0a\x0b\x0c\x0d"])
        self.assertEqual(p.encode(p.Hello(p.Role.WORKER, "w", "q", 4, held=[]))[6:], [b""], "empty, not absent")
        self.assertEqual(p.encode(p.Hello(p.Role.WORKER, "w", "q", 4, held=[p.Ref(ID1, 4)]))[6],
                         p.encode(p.HandBack([p.Ref(ID1, 4)]))[2], "the same ref list as hand-back")
        frames = p.encode(p.Submit("q", True, [p.Item(ID1, b"xy")], 1500))
        self.assertEqual(frames[2:], [b"q", b"\x01", b"\x00\x00\x05\xdc", ID1 + b"\x00\x00\x00\x02xy"])
        self.assertEqual(p.encode(p.Submit("q", False, []))[3:], [b"\x00", bytes(4)])

    def test_packed_frames_close_at_512_kib_and_a_larger_record_gets_its_own(self) -> None:
        outcomes = [p.Outcome(n.to_bytes(16, "big"), 1, p.Status.SUCCEEDED, bytes([n & 0xFF]) * (900_000 if n % 11 == 0 else 100))
                    for n in range(110)]
        frames = p.encode(p.Done(3, outcomes))
        packed = frames[3:]
        self.assertGreater(len(packed), 1)
        for frame in packed:
            self.assertLessEqual(len(frame), max(p.PACKED_FRAME_BYTES, 900_000 + 25))
        self.assertEqual(p.decode(frames).outcomes, outcomes)
        batch = [p.Item(n.to_bytes(16, "big"), b"\x01" * 1024) for n in range(256)]
        self.assertEqual(len(p.encode(p.Submit("q", False, batch))), 6, "a full batch of 256 KiB is one packed frame")

    def test_several_packed_frames_decode_as_one_list(self) -> None:
        frames = p.encode(p.Submit("q", False, [p.Item(ID1, b"\x01")]))
        frames += p.encode(p.Submit("q", False, [p.Item(ID2, b"\x02\x03")]))[5:]
        decoded = p.decode(frames)
        self.assertEqual(list(decoded.items), [p.Item(ID1, b"\x01"), p.Item(ID2, b"\x02\x03")])


class MalformedTests(unittest.TestCase):
    SIG = b"DRV\x02"
    CASES = [
        ([b"hello"], "frame-count"),
        ([b"GET /", b"\x01"], "not-drover"),
        ([b"DRV\x03", b"\x03"], "unsupported-version"),
        ([SIG, b"\x99"], "unknown-command"),
        ([SIG, b"\x03\x03"], "frame-size"),
        ([SIG, b"\x03", b"extra"], "frame-count"),
        ([SIG, b"\x20"], "frame-count"),
        ([SIG, b"\x20", b"\x01\x02"], "frame-size"),
        ([SIG, b"\x11", b"\x01\x02\x03"], "frame-size"),
        ([SIG, b"\x10", b"q"], "frame-count"),
        ([SIG, b"\x10", b"q", b"\x01"], "frame-count"),  # no item time limit
        ([SIG, b"\x10", b"q", b"\x01", bytes(4), b"\x01"], "frame-size"),
        ([SIG, b"\x10", b"q", b"\x02", bytes(4)], "bad-value"),  # flag bits other than bit 0
        ([SIG, b"\x10", b"q", b"\x01", bytes(4), bytes(16) + b"\x00\x00\x00\x09\x01"], "frame-size"),
        ([SIG, b"\x22", b"\x00\x00\x00\x01", bytes(20) + b"\x07\x00\x00\x00\x00"], "bad-value"),
        ([SIG, b"\x24", b"\x01", b"\xff\xfe"], "bad-value"),
        ([SIG, b"\x24", b"\x09", b"why"], "bad-value"),
        ([SIG, b"\x24", b"fleet exit"], "frame-count"),  # the bye of before the code frame
        ([SIG, b"\x01", b"\x09", b"", b"", bytes(4)], "bad-value"),
        ([SIG, b"\x01", b"\x02", b"w", b"q"], "frame-count"),  # hello without concurrency
        ([SIG, b"\x01", b"\x02", b"w", b"q", bytes(4), bytes(21)], "frame-size"),  # held not whole refs
        ([SIG, b"\x01", b"\x02", b"w", b"q", bytes(4), bytes(20), b""], "frame-count"),  # 6 argument frames
        ([SIG, b"\x30", bytes(8) + b"\x07" + bytes(4)], "bad-value"),
        ([SIG, b"\x02", bytes(4), bytes(4), bytes(13), bytes(8)], "frame-count"),  # welcome without liveness-ms
        ([SIG, b"\x12", ID1, b"\x09", b"why"], "bad-value"),
        ([SIG, b"\x23", bytes(21)], "frame-size"),
    ]

    def test_frames_that_break_the_layout_are_refused(self) -> None:
        for frames, kind in self.CASES:
            with self.subTest(frames=frames):
                with self.assertRaises(p.ProtocolError) as caught:
                    p.decode(frames)
                self.assertEqual(caught.exception.kind, kind, caught.exception.detail)

    def test_a_hello_of_six_frames_names_both_counts_it_takes(self) -> None:
        with self.assertRaises(p.ProtocolError) as caught:
            p.decode([b"DRV\x02", b"\x01", b"\x02", b"w", b"q", bytes(4), bytes(20), b""])
        self.assertEqual(caught.exception.kind, "frame-count")
        self.assertEqual(caught.exception.wire_code, p.ErrorCode.MALFORMED)
        self.assertEqual(caught.exception.detail, "hello: expected 4 argument frames (5 with a worker's held items), got 6")

    def test_a_newer_version_is_named_with_ours(self) -> None:
        with self.assertRaises(p.ProtocolError) as caught:
            p.decode([b"DRV\x03", b"\x03"])
        self.assertIn("version 3", caught.exception.detail)
        self.assertIn("version 2", caught.exception.detail)
        self.assertEqual(caught.exception.wire_code, p.ErrorCode.UNSUPPORTED_VERSION)

    def test_names_longer_than_255_bytes_are_refused_both_ways(self) -> None:
        with self.assertRaises(ValueError):
            p.encode(p.Hello(p.Role.WORKER, "x" * 256))
        frames = [b"DRV\x02", b"\x01", b"\x02", b"x" * 256, b"", bytes(4)]
        with self.assertRaises(p.ProtocolError):
            p.decode(frames)

    def test_an_unknown_error_code_is_kept_with_its_text(self) -> None:
        message = p.decode([b"DRV\x02", b"\x04", b"\x00\x63", b"new"])
        self.assertEqual((message.code, message.text), (99, "new"))

    def test_queue_names(self) -> None:
        self.assertIsNone(p.queue_name_problem("images"))
        for bad in ["", "a b", "tab\there", "x" * 256, "del\x7f"]:
            self.assertIsNotNone(p.queue_name_problem(bad), bad)


if __name__ == "__main__":
    unittest.main()
