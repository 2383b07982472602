import Dispatch
import Drover
import Foundation
import Logging

/// Routes SIGINT and SIGTERM to a handler that is told how many have arrived, so the first can
/// drain and the second stop at once. Dispatch sources run the handler on a background queue.
final class SignalRelay: @unchecked Sendable {
    private var sources: [DispatchSourceSignal] = []
    private var count = 0
    private let queue = DispatchQueue(label: "drover.signals")

    init(_ signals: [Int32] = [SIGINT, SIGTERM], handler: @escaping @Sendable (_ signal: Int32, _ count: Int) -> Void) {
        for sig in signals {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            source.setEventHandler { [unowned self] in
                self.count += 1
                handler(sig, self.count)
            }
            source.resume()
            sources.append(source)
        }
    }
}

/// Runs `service` on this thread with SIGINT and SIGTERM mapped onto its lifecycle: the first
/// begins a graceful stop (named after the signal), a second stops it at once. Every role's
/// command runs through here, so they all answer signals the same way.
func runHandlingSignals<Service: DroverService>(_ service: Service) throws -> Service.Exit {
    let signals = SignalRelay { sig, count in
        if count == 1 {
            service.beginGracefulStop(reason: sig == SIGTERM ? "SIGTERM" : "SIGINT")
        } else {
            service.stopNow()
        }
    }
    return try withExtendedLifetime(signals) { try service.run() }
}

/// Reads `keys` again on each SIGHUP and logs what changed; a file that cannot be read leaves
/// the keys in force as they were. Without keys SIGHUP only says so: a server does not stop on
/// it (`systemctl reload`, a stray `kill -HUP`). Keep the result alive while serving.
func reloadOnHangup(_ keys: AuthorizedKeys?, logger: Logger) -> SignalRelay {
    SignalRelay([SIGHUP]) { _, _ in
        guard let keys else {
            logger.notice("SIGHUP: nothing to read again (no --authorized-keys)")
            return
        }
        do {
            let (added, removed) = try keys.reload()
            logger.notice("authorized keys read again (SIGHUP)", metadata: [
                "keys": "\(keys.count)", "added": "\(added.map(\.name))", "removed": "\(removed.map(\.name))"])
        } catch {
            logger.error("could not read the authorized keys again; the keys in force stay as they were", metadata: ["problem": "\(error)"])
        }
    }
}
