import ArgumentParser
import Drover
import DroverDispatch
import DroverJournal
import DroverProtocol
import Foundation

struct JournalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "journal",
        abstract: "Check or show a broker's journal, offline.",
        discussion: """
        Both read the data directory without changing it, and work while a broker runs (its last record may then show as a torn tail in progress).

        Examples:
          drover journal verify ~/.local/state/drover/broker
          drover journal dump /var/lib/drover --limit 20
        """,
        subcommands: [Verify.self, Dump.self]
    )

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check every record's length and checksum, and say what a broker would recover.",
            discussion: "Exit status: 0 when the journal is sound (a torn tail, which a broker cuts at start, is reported), 1 when it is damaged.")

        @Argument(help: "The broker's data directory.")
        var directory: String

        func run() throws {
            let store = JournalStore(directory: directory, segmentBytes: 64 << 20)
            let numbers: [UInt32]
            do {
                numbers = try store.segmentsOnDisk()
            } catch let damage as JournalStore.Damage {
                print("DAMAGED: \(damage)")
                throw ExitCode(1)
            } catch {
                throw ValidationError("cannot read \(directory): \(error)")
            }
            guard !numbers.isEmpty else {
                print("\(directory): no journal segments (an empty journal, or not a data directory)")
                return
            }
            var damaged = false
            let contents = numbers.map { number in
                (try? Data(contentsOf: URL(fileURLWithPath: directory + "/" + JournalStore.segmentName(number)))).map { [UInt8]($0) } ?? []
            }
            // The last segment with records (one made ahead of need is all zeros).
            let lastWithRecords = numbers.indices.last { contents[$0].contains { $0 != 0 } }
            for (index, number) in numbers.enumerated() {
                let bytes = contents[index]
                if let lastWithRecords, index > lastWithRecords {
                    print("segment \(number): empty (made ahead of need)")
                    continue
                }
                let scan = JournalReader.scan(bytes, segment: number, isLast: index == lastWithRecords,
                                              maxRecordBytes: JournalStore.largestPlausibleRecord)
                var line = "segment \(number): \(scan.records.count) records, \(scan.end) bytes used of \(bytes.count)"
                if case .damaged(let offset, let reason) = scan.problem {
                    damaged = true
                    line += "; DAMAGED at offset \(offset): \(reason)"
                } else if case .tornTail(let offset, let torn) = scan.problem {
                    line += "; torn tail at offset \(offset) (\(torn) bytes; a broker cuts it at start: a write a crash cut short, never acknowledged)"
                }
                print(line)
            }
            if damaged {
                print("DAMAGED: a broker refuses to start on this journal; nothing has been changed")
                throw ExitCode(1)
            }
            // Replay it as a broker would, without touching the files.
            var dispatcher = Dispatcher(limits: DispatcherLimits(maxItemBytes: 1 << 30, maxItems: .max, workerLivenessMilliseconds: 3000))
            let recovery = try store.recover(maxRecordBytes: JournalStore.largestPlausibleRecord, repair: false) { record, segment in
                dispatcher.recover(record, segment: segment)
            }
            let log = JournalLog(segmentBytes: 64 << 20, oldestSegment: recovery.oldestSegment, lastSegment: recovery.lastSegment)
            let held = dispatcher.finishRecovery(journal: log, now: 0)
            print("sound: \(recovery.records) records; a broker would hold \(held.queued) queued, \(held.retrying) waiting to retry, "
                  + "\(held.dead) dead, and remember \(held.recentCompletions) recent completions")
        }
    }

    struct Dump: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the journal's records, one per line, oldest first.")

        @Argument(help: "The broker's data directory.")
        var directory: String

        @Option(help: "Print at most this many records (0: all).")
        var limit = 0

        func run() throws {
            let store = JournalStore(directory: directory, segmentBytes: 64 << 20)
            var printed = 0
            struct Enough: Error {}
            do {
                _ = try store.recover(maxRecordBytes: JournalStore.largestPlausibleRecord, repair: false) { record, segment in
                    if limit > 0 && printed >= limit { throw Enough() }
                    print("segment \(segment): \(Self.describe(record))")
                    printed += 1
                }
            } catch is Enough {
            } catch let damage as JournalStore.Damage {
                print("DAMAGED: \(damage)")
                throw ExitCode(1)
            }
        }

        static func describe(_ record: JournalRecord) -> String {
            func preview(_ bytes: ArraySlice<UInt8>) -> String {
                let text = String(decoding: bytes.prefix(40), as: UTF8.self).replacingOccurrences(of: "\n", with: "\\n")
                return "\"\(text)\(bytes.count > 40 ? "…" : "")\" (\(bytes.count) bytes)"
            }
            switch record {
            case .accepted(let a):
                let first = a.items.first.map { " first \($0.id) \(preview($0.payload))" } ?? ""
                return "accepted \(a.items.count) into \"\(a.queue)\", sequence \(a.firstSequence)…, time limit \(a.timeoutMilliseconds) ms;\(first)"
            case .completed(let items):
                return "completed \(items.count): " + items.prefix(3).map { "\($0.id)\($0.outcome == nil ? "" : " (outcome kept)")" }.joined(separator: ", ")
                    + (items.count > 3 ? ", …" : "")
            case .failed(let f):
                return "failed \(f.id): deliveries \(f.deliveries), failures \(f.failures), \(f.dead ? "dead" : "to retry"): \(f.error)"
            case .returned(let items):
                return "returned to the queue \(items.count): " + items.prefix(3).map { "\($0.id)" }.joined(separator: ", ")
            case .replayed(let items):
                return "replayed \(items.count): " + items.prefix(3).map { "\($0.id)" }.joined(separator: ", ")
            case .purged(let ids):
                return "purged \(ids.count): " + ids.prefix(3).map(\.description).joined(separator: ", ")
            case .carried(let c):
                return "carried forward \(c.id) in \"\(c.queue)\" (\(c.state), deliveries \(c.deliveries), failures \(c.failures)) \(preview(c.payload))"
            }
        }
    }
}
