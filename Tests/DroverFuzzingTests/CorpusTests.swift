import DroverFuzzing
import DroverProtocol
import Foundation
import Testing

/// Every input of the committed corpus (seeds, and crashes the fuzzer found, kept as
/// regression inputs) goes through its target without a crash.
@Suite("Fuzz corpus replay")
struct CorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/corpus").path

    @Test("each target replays its corpus", arguments: FuzzTarget.allCases)
    func replay(target: FuzzTarget) throws {
        let directory = "\(Self.corpus)/\(target.rawValue)"
        let files = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        #expect(!files.isEmpty, "\(directory) has no inputs")
        for file in files {
            let data = try #require(FileManager.default.contents(atPath: "\(directory)/\(file)"))
            target.run(Array(data))
        }
    }

    @Test("the message seeds decode as the messages they were made from (the framing the fuzzer mutates is right)")
    func seedsDecode() throws {
        for message in FuzzSeeds.messages() {
            let bytes = FuzzTarget.encode(message: message)
            let frames = [ProtocolVersion.signature, [bytes[0]]] + FuzzTarget.frames(bytes.dropFirst())
            #expect(try Codec.decode(frames) == message)
        }
    }
}
