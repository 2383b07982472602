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
            let slots = limit == 0 ? Array(deadOrder) : Array(deadOrder.prefix(Int(limit)))
            return json(slots.map { view($0, now: now, withPayload: false) })
        case .show(let id):
            guard let slot = items.slot(of: id), items[slot].state == .dead else {
                return json(DeadLetterChange(count: 0, unknown: [id.description]))
            }
            return json(view(slot, now: now, withPayload: true))
        case .replay(let ids):
            let (found, unknown) = take(ids)
            var touched: Set<String> = []
            for slot in found {
                items[slot].item.failures = 0  // a fresh cap; `deliveries` keeps growing so attempts stay unique
                // At the back of its queue, in order with the items accepted since.
                items[slot].item.sequence = nextSequence
                nextSequence &+= 1
                items.setLastError(slot, nil)
                items[slot].state = .queued
                queues[items[slot].item.queue, default: QueueState()].items.append(slot)
                touched.insert(items[slot].item.queue)
            }
            if journal != nil && !found.isEmpty {
                for piece in journalPieces(found, each: 24) {
                    journal!.append(.replayed(piece.map { .init(id: items[$0].item.id, sequence: items[$0].item.sequence) }))
                }
            }
            for name in touched { dispatch(name) }
            return json(DeadLetterChange(count: found.count, unknown: unknown))
        case .purge(let ids):
            let (found, unknown) = take(ids)
            if journal != nil && !found.isEmpty {
                for piece in journalPieces(found, each: 16) { journal!.append(.purged(piece.map { items[$0].item.id })) }
                for slot in found { journalRelease(slot) }
            }
            for slot in found {
                countOut(slot)
                items.remove(slot)
            }
            return json(DeadLetterChange(count: found.count, unknown: unknown))
        }
    }

    /// Removes the named dead items (all when `ids` is empty) from the store and returns their slots.
    private mutating func take(_ ids: [ItemID]) -> (found: [UInt32], unknown: [String]) {
        var found: [UInt32] = []
        var unknown: [String] = []
        if ids.isEmpty {
            found = Array(deadOrder)
        } else {
            for id in ids {
                if let slot = items.slot(of: id), items[slot].state == .dead, !found.contains(slot) {
                    found.append(slot)
                } else {
                    unknown.append(id.description)
                }
            }
        }
        if !found.isEmpty {
            let gone = Set(found)
            deadOrder.removeAll { gone.contains($0) }
            for slot in found { deadSince[slot] = nil }
        }
        return (found, unknown)
    }

    private func view(_ slot: UInt32, now: Int64, withPayload: Bool) -> DeadLetterView {
        let item = items[slot].item
        return DeadLetterView(
            id: item.id.description, queue: item.queue, attempts: item.deliveries, failures: item.failures,
            lastError: items.lastError(slot), bytes: Int(item.payloadLength), ageMilliseconds: now - (deadSince[slot] ?? now),
            payloadText: withPayload ? payload(of: slot).flatMap { String(validating: $0, as: UTF8.self) } : nil,
            payloadBase64: withPayload ? payload(of: slot).map { Data($0).base64EncodedString() } : nil)
    }
}
