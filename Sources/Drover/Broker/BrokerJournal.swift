import DroverDispatch
import DroverJournal
import DroverProtocol
import Foundation
import Logging

/// Opening a broker's data directory: take its lock, replay the journal into a dispatcher,
/// and start the journal thread.
struct BrokerJournal {
    let store: JournalStore
    /// Held while the broker runs; the kernel drops it when the process ends.
    let lock: DataDirectoryLock?
    /// Items held after recovery, and how long it took.
    let recoveredItems: Int
    let recoverySeconds: Double

    /// Opens `directory` (made if missing) and replays it into `dispatcher`.
    static func open(_ directory: String, options: BrokerOptions, fileSystem: any JournalFileSystem = DiskFileSystem(),
                     into dispatcher: inout Dispatcher, logger: Logger) throws -> BrokerJournal {
        do {
            try fileSystem.makeDirectory(directory)
        } catch {
            throw DroverError.cannotWrite(directory, "cannot make the data directory: \(error.detail) (choose another with --data-dir)")
        }
        let lock: DataDirectoryLock?
        do {
            lock = fileSystem is DiskFileSystem ? try DataDirectoryLock(directory: directory) : nil
        } catch {
            throw DroverError.refused("cannot use data directory \(directory): \(error)")
        }
        let store = JournalStore(directory: directory, fileSystem: fileSystem, segmentBytes: options.segmentBytes)
        let started = DispatchTime.now().uptimeNanoseconds
        let recovery: JournalStore.Recovery
        do {
            recovery = try store.recover(maxRecordBytes: JournalStore.largestPlausibleRecord) { record, segment in
                dispatcher.recover(record, segment: segment)
            }
        } catch let damage as JournalStore.Damage {
            throw DroverError.refused("""
                the journal in \(directory) is damaged: \(damage). Nothing was cut or changed. \
                `drover journal verify \(directory)` reports every problem; move the directory aside to start empty.
                """)
        } catch let error as JournalError {
            throw DroverError.cannotWrite(directory, "cannot read the journal: \(error)")
        }
        let log = JournalLog(segmentBytes: options.segmentBytes, oldestSegment: recovery.oldestSegment,
                             lastSegment: recovery.lastSegment, lastSegmentEnd: recovery.lastSegmentEnd)
        let recovered = dispatcher.finishRecovery(journal: log, now: monotonicMilliseconds())
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        if recovery.tornBytes > 0 {
            logger.warning("cut a torn tail off the journal: the last write before a crash, never acknowledged", metadata: [
                "segment": "\(recovery.tornSegment ?? 0)", "offset": "\(recovery.tornOffset)", "bytes": "\(recovery.tornBytes)"])
        }
        logger.info("journal recovered", metadata: [
            "data-dir": "\(directory)", "segments": "\(recovery.segments)", "records": "\(recovery.records)",
            "queued": "\(recovered.queued)", "retrying": "\(recovered.retrying)", "dead": "\(recovered.dead)",
            "recent-completions": "\(recovered.recentCompletions)", "seconds": "\(String(format: "%.3f", seconds))",
            "crc32c": "\(CRC32C.isHardware ? "hardware" : "software")"])
        return BrokerJournal(store: store, lock: lock, recoveredItems: dispatcher.itemsHeld, recoverySeconds: seconds)
    }
}
