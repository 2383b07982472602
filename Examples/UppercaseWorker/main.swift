// A worker with a custom in-thread handler, written against the Drover library.
//
//   swift run UppercaseWorker tcp://127.0.0.1:5555
//
// Each item is decoded as UTF-8, upper-cased and returned; an item that says "fail" fails
// with a message, which the producer sees with `drover send --wait`.
import Drover
import Foundation
import Logging

let broker = CommandLine.arguments.dropFirst().first ?? "tcp://127.0.0.1:5555"
LoggingSystem.bootstrap { DroverLogHandler(label: $0, format: .text, level: .info) }

var options = WorkerOptions(broker: broker)
options.queue = "default"
options.threads = 4

let worker = Worker(options: options, logger: Logger(label: "uppercase-worker")) { item in
    let text = String(decoding: item.payload, as: UTF8.self)
    if text == "fail" { throw HandlerFailure("asked to fail (attempt \(item.attempt))") }
    return Array(text.uppercased().utf8)
}

// SIGTERM or Ctrl-C drains the worker: unstarted items go back to the broker, running ones finish.
signal(SIGTERM, SIG_IGN)
signal(SIGINT, SIG_IGN)
let sources = [SIGTERM, SIGINT].map { sig in
    let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
    source.setEventHandler { worker.drain(reason: "signal \(sig)") }
    source.resume()
    return source
}

do {
    let exit = try worker.run()
    print("worker finished: \(exit)")
} catch {
    print("worker failed: \(error)")
    exit(1)
}
withExtendedLifetime(sources) {}
