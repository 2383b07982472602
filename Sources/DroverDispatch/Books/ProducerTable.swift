/// Producers waiting for outcomes, by a small number stored in each item's slot instead of the
/// producer's routing id. A number is freed when nothing routed to it is left.
struct ProducerTable: Sendable {
    private var peers: [PeerID] = []
    private var waiting: [Int] = []
    private var numbers: [PeerID: UInt32] = [:]
    private var freeNumbers: [UInt32] = []

    /// The number for `peer` (1-based), made if needed. Pair with ``retain(_:)`` per item
    /// routed, and ``releaseIfUnused(_:)`` when none was.
    mutating func number(for peer: PeerID) -> UInt32 {
        if let n = numbers[peer] { return n }
        let n: UInt32
        if let reused = freeNumbers.popLast() {
            n = reused
            peers[Int(n - 1)] = peer
        } else {
            peers.append(peer)
            waiting.append(0)
            n = UInt32(peers.count)
        }
        numbers[peer] = n
        return n
    }

    mutating func retain(_ n: UInt32) { waiting[Int(n - 1)] += 1 }

    /// The routing id of producer `n`.
    func peer(_ n: UInt32) -> PeerID { peers[Int(n - 1)] }

    /// One item routed to `n` is finished with.
    mutating func release(_ n: UInt32) {
        waiting[Int(n - 1)] -= 1
        if waiting[Int(n - 1)] == 0 { releaseIfUnused(n) }
    }

    mutating func releaseIfUnused(_ n: UInt32) {
        guard waiting[Int(n - 1)] == 0, numbers[peers[Int(n - 1)]] != nil else { return }
        numbers[peers[Int(n - 1)]] = nil
        peers[Int(n - 1)] = []
        freeNumbers.append(n)
    }
}
