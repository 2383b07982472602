import DroverProtocol
import Foundation

/// One dead item as `drover dlq` shows it.
public struct DeadLetterView: Codable, Sendable, Equatable {
    public var id: String
    public var queue: String
    /// Deliveries made, counting every attempt.
    public var attempts: UInt32
    /// Deliveries that failed or whose worker died.
    public var failures: UInt32
    public var lastError: String
    public var bytes: Int
    /// Milliseconds since it was dead-lettered.
    public var ageMilliseconds: Int64
    /// The payload as text, when it is valid UTF-8 (``show`` only).
    public var payloadText: String?
    /// The payload, base64 (``show`` only).
    public var payloadBase64: String?
}

/// The answer to `replay` and `purge`.
public struct DeadLetterChange: Codable, Sendable, Equatable {
    /// How many dead items were replayed or purged.
    public var count: Int
    /// Ids asked for that are not in the store.
    public var unknown: [String]
}

/// The dead-letter store: list, show, replay, purge.
extension Dispatcher {
    /// Answers a `dead-letters` request with JSON.
    public mutating func deadLetters(_ request: DeadLetterRequest, now: Int64) -> String {
        func json<T: Encodable>(_ value: T) -> String { jsonText(value) }
        switch request {
        case .list(let limit):
            let ids = limit == 0 ? Array(deadOrder) : Array(deadOrder.prefix(Int(limit)))
            return json(ids.compactMap { dead[$0].map { view($0, now: now, withPayload: false) } })
        case .show(let id):
            guard let letter = dead[id] else { return json(DeadLetterChange(count: 0, unknown: [id.description])) }
            return json(view(letter, now: now, withPayload: true))
        case .replay(let ids):
            let (found, unknown) = take(ids)
            var touched: Set<String> = []
            for var item in found {
                item.failures = 0  // a fresh cap; `deliveries` keeps growing so attempts stay unique
                item.lastError = ""
                live.insert(item.id)
                queues[item.queue, default: QueueState()].items.append(item)
                touched.insert(item.queue)
            }
            for name in touched { dispatch(name) }
            return json(DeadLetterChange(count: found.count, unknown: unknown))
        case .purge(let ids):
            let (found, unknown) = take(ids)
            held -= found.count
            return json(DeadLetterChange(count: found.count, unknown: unknown))
        }
    }

    /// Removes the named dead items (all when `ids` is empty) from the store.
    private mutating func take(_ ids: [ItemID]) -> (found: [Item], unknown: [String]) {
        let wanted = ids.isEmpty ? Array(deadOrder) : ids
        var found: [Item] = []
        var unknown: [String] = []
        for id in wanted {
            if let letter = dead.removeValue(forKey: id) { found.append(letter.item) } else { unknown.append(id.description) }
        }
        if !found.isEmpty {
            let gone = Set(found.map(\.id))
            deadOrder.removeAll { gone.contains($0) }
        }
        return (found, unknown)
    }

    private func view(_ letter: DeadLetter, now: Int64, withPayload: Bool) -> DeadLetterView {
        let item = letter.item
        return DeadLetterView(
            id: item.id.description, queue: item.queue, attempts: item.deliveries, failures: item.failures,
            lastError: item.lastError, bytes: item.payload.count, ageMilliseconds: now - letter.at,
            payloadText: withPayload ? String(validating: item.payload, as: UTF8.self) : nil,
            payloadBase64: withPayload ? Data(item.payload).base64EncodedString() : nil)
    }
}
