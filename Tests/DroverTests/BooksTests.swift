import DroverProtocol
import Testing
@testable import Drover
@testable import DroverDispatch

@Suite("The producer's ring of unfinished items and the worker's held slots")
struct BooksTests {
    @Test("items finishing in random order agree with a Dictionary, through growth and stragglers", arguments: [1, 2, 3] as [UInt64])
    func unfinishedMatchesDictionary(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        // A window of 600 gives a ring of at most 2,048: long-lived items become stragglers.
        var books = UnfinishedItems(window: 600)
        var model: [UInt64: (payload: [UInt8], accepted: Bool)] = [:]
        var next: UInt64 = 0
        for _ in 0..<50_000 {
            switch random.next() % 8 {
            case 0, 1, 2:
                let payload = [UInt8(truncatingIfNeeded: next)]
                books.add(next, payload: payload)
                model[next] = (payload, false)
                next += 1
            case 3:
                // Mostly recent items, sometimes any: old ones become stragglers.
                guard next > 0 else { continue }
                let span = random.next() % 10 == 0 ? next : min(next, 64)
                let index = next - 1 - random.next() % span
                let marked = books.markAccepted(index)
                #expect(marked == (model[index].map { !$0.accepted } ?? false))
                if model[index] != nil { model[index]!.accepted = true }
            default:
                guard next > 0 else { continue }
                let span = random.next() % 50 == 0 ? next : min(next, 700)
                let index = next - 1 - random.next() % span
                let removed = books.remove(index)
                let expected = model.removeValue(forKey: index)
                #expect(removed?.payload == expected?.payload)
                #expect(removed?.accepted == expected?.accepted)
            }
        }
        #expect(books.count == model.count)
        #expect(books.acceptedCount == model.values.filter(\.accepted).count)
        #expect(model.allSatisfy { books[$0.key]?.payload == $0.value.payload && books[$0.key]?.accepted == $0.value.accepted })
        #expect(books.resetAcceptance() == model.keys.sorted())
        #expect(model.keys.allSatisfy { books[$0]?.accepted == false })
        #expect(books.acceptedCount == 0)
    }

    @Test("one item left behind by a million others stays, and the ring does not grow past its limit")
    func straggler() {
        var books = UnfinishedItems(window: 100)
        books.add(0, payload: [42])
        for index in 1...1_000_000 as ClosedRange<UInt64> {
            books.add(index, payload: [])
            books.remove(index)
        }
        #expect(books.count == 1)
        #expect(books.ringSize == 1024)  // the smallest ring; twice the window is less
        #expect(books[0]?.payload == [42])
        #expect(books.remove(0)?.payload == [42])
        #expect(books.count == 0)
        books.removeAll()
        books.add(0, payload: [1])
        #expect(books[0]?.payload == [1])
    }

    @Test("held slots: capacity bounds them, a stale release is refused, removeAll frees every slot")
    func heldItems() {
        var held = HeldItems(capacity: 3)
        let deliveries = (0..<4).map { Delivery(id: ItemID(high: 1, low: UInt64($0)), attempt: 1, payload: []) }
        let slots = deliveries.prefix(3).map { held.hold($0)! }
        #expect(Set(slots).count == 3)
        #expect(held.hold(deliveries[3]) == nil)
        let released1 = held.release(slots[0], id: deliveries[0].id, attempt: 2); #expect(!released1)  // another attempt
        let released2 = held.release(slots[0], id: deliveries[1].id, attempt: 1); #expect(!released2)  // another item
        let released3 = held.release(slots[0], id: deliveries[0].id, attempt: 1); #expect(released3)
        let released4 = held.release(slots[0], id: deliveries[0].id, attempt: 1); #expect(!released4)  // already free
        #expect(held.count == 2)
        #expect(Set(held.all.map(\.id)) == [deliveries[1].id, deliveries[2].id])
        #expect(held.hold(deliveries[3]) != nil)
        held.removeAll()
        #expect(held.isEmpty && held.all.isEmpty)
        var taken = 0
        while held.hold(deliveries[0]) != nil { taken += 1 }
        #expect(taken == 3)
    }
}
