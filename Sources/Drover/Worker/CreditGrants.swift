import DequeModule

/// The credit the broker holds for a worker, as far as the worker knows: each grant it sent
/// since the last registration, oldest first, less what deliveries used. The total is never
/// less than the broker's own count (deliveries may be on the way), so granting up to the
/// capacity never over-grants.
///
/// The broker answers a grant at once when it has items waiting, so a delivery that uses up a
/// whole grant shows that the broker had a backlog: the lookahead's sign that more credit
/// would have been used.
struct CreditGrants: Equatable {
    private var grants: Deque<Int> = []
    private(set) var total = 0

    mutating func grant(_ amount: Int) {
        guard amount > 0 else { return }
        grants.append(amount)
        total += amount
    }

    /// Deliveries of `count` items used the oldest grants; returns whether one was used up.
    mutating func use(_ count: Int) -> Bool {
        var left = count
        var usedUp = false
        while left > 0, let first = grants.first {
            let taken = min(first, left)
            left -= taken
            total -= taken
            if taken == first {
                grants.removeFirst()
                usedUp = true
            } else {
                grants[grants.startIndex] = first - taken
            }
        }
        return usedUp
    }

    /// A new registration: the broker holds no credit for us.
    mutating func reset() {
        grants.removeAll()
        total = 0
    }
}
