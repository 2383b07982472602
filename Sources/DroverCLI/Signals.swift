import Dispatch
import Foundation

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
