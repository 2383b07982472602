import DroverJournal
import DroverProtocol

/// Bounded memory: the payload bytes the broker holds, and how many of them are in memory.
///
/// With a journal every payload is on disk, so memory need not hold them all: past
/// ``DispatcherLimits/memoryLimitBytes`` the payloads of the items queued last are dropped
/// (``spillIfOverLimit()``, after each turn's records are written) and read back from their
/// segment when they are dispatched (``readPayload``). So a backlog far larger than memory runs
/// through a broker whose memory stays near the limit. Without a journal, producers are told
/// "queue full" past the limit instead.
extension Dispatcher {
    /// Payload bytes of every held item, and of those whose payload is in memory.
    public var bytesHeld: Int { payloadBytesHeld }
    public var bytesInMemory: Int { payloadBytesInMemory }

    /// Refuses a batch of `bytes` that would take the broker past its byte limits; returns
    /// whether it did.
    mutating func refusedForBytes(_ peer: PeerID, _ ids: [ItemID], bytes: Int) -> Bool {
        if journal == nil && payloadBytesHeld + bytes > limits.memoryLimitBytes {
            reject(peer, ids, .queueFull, "the broker holds \(payloadBytesHeld) bytes of items in memory, its limit is "
                   + "\(limits.memoryLimitBytes) (broker --memory-limit; it keeps no journal, --in-memory); retry later")
            return true
        }
        if limits.maxHeldBytes > 0 && payloadBytesHeld + bytes > limits.maxHeldBytes {
            reject(peer, ids, .queueFull, "the broker holds \(payloadBytesHeld) bytes of items, its maximum is "
                   + "\(limits.maxHeldBytes) (broker --max-bytes); retry later")
            return true
        }
        return false
    }

    /// A held item's payload joins the books (in memory unless it was spilled).
    mutating func countIn(_ slot: UInt32) {
        let length = Int(items[slot].item.payloadLength)
        payloadBytesHeld += length
        if !items[slot].item.isSpilled { payloadBytesInMemory += length }
    }

    /// A held item leaves the books.
    mutating func countOut(_ slot: UInt32) {
        let length = Int(items[slot].item.payloadLength)
        payloadBytesHeld -= length
        if !items[slot].item.isSpilled { payloadBytesInMemory -= length }
    }

    /// Drops from memory the payloads of the items queued last, until the payloads in memory
    /// are under the limit (or no queued item has one to drop). Call after the turn's records
    /// are written: a dropped payload is read back from its segment.
    public mutating func spillIfOverLimit() {
        guard journal != nil, payloadBytesInMemory > limits.memoryLimitBytes else { return }
        for name in Array(queues.keys) where payloadBytesInMemory > limits.memoryLimitBytes {
            guard let queue = queues[name] else { continue }
            var index = queue.items.count - 1
            while index >= 0 && payloadBytesInMemory > limits.memoryLimitBytes {
                let slot = queue.items[index]
                // Items further forward were dropped already, or arrived before the limit was
                // reached: stop at the first one without a payload in memory.
                guard !items[slot].item.isSpilled, items[slot].item.segment != ItemTable.noSegment else { break }
                if items[slot].item.payloadLength > 0 {
                    payloadBytesInMemory -= Int(items[slot].item.payloadLength)
                    items[slot].item.payload = []
                    spilledItems += 1
                }
                index -= 1
            }
        }
    }

    /// The payload of the item in `slot`, read back from the journal if it is not in memory;
    /// nil when it cannot be read (``payloadReadFailure`` says why).
    func payload(of slot: UInt32) -> ArraySlice<UInt8>? {
        let item = items[slot].item
        guard item.isSpilled else { return item.payload }
        guard let bytes = readPayload?(item.segment, Int(item.payloadOffset), Int(item.payloadLength)),
              bytes.count == Int(item.payloadLength) else { return nil }
        return bytes[...]
    }

    /// Brings the payload of the item in `slot` back into memory (it is being delivered).
    /// Returns false when it cannot be read: the journal is failing.
    mutating func loadPayload(_ slot: UInt32) -> Bool {
        guard items[slot].item.isSpilled else { return true }
        guard let bytes = payload(of: slot) else {
            let item = items[slot].item
            payloadReadFailure = "cannot read the payload of item \(item.id) back from journal segment \(item.segment) at offset \(item.payloadOffset)"
            return false
        }
        items[slot].item.payload = bytes
        payloadBytesInMemory += bytes.count
        return true
    }
}
