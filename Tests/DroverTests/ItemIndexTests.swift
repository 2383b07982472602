import DroverProtocol
import Testing
@testable import Drover

@Suite("ItemIndex: the id hash table under the broker's and producer's books")
struct ItemIndexTests {
    @Test("random inserts, updates and removals agree with a Dictionary", arguments: [1, 2, 3] as [UInt64])
    func matchesDictionary(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        var index = ItemIndex(seed: seed)
        var model: [ItemID: UInt64] = [:]
        // Few distinct high halves and a narrow range of low halves: many ids share probe runs.
        func anyID() -> ItemID { ItemID(high: random.next() % 3, low: random.next() % 5000) }
        for step in 0..<60_000 {
            let id = anyID()
            switch random.next() % 4 {
            case 0, 1:
                let value = UInt64(step)
                let present = index.insertIfAbsent(id, value)
                #expect(present == model[id])
                if present == nil { model[id] = value }
            case 2:
                #expect(index.remove(id) == model.removeValue(forKey: id))
            default:
                if let position = index.find(id) {
                    index.setValue(UInt64(step), at: position)
                    #expect(model[id] != nil)
                    model[id] = UInt64(step)
                } else {
                    #expect(model[id] == nil)
                }
            }
        }
        #expect(index.count == model.count)
        let mismatches = model.filter { index[$0.key] != $0.value }.count
        #expect(mismatches == 0)
    }

    @Test("removing everything leaves an empty, reusable table")
    func removeEverything() {
        var index = ItemIndex(seed: 7)
        let ids = (0..<1000).map { ItemID(high: 1, low: UInt64($0)) }
        for (n, id) in ids.enumerated() { #expect(index.insertIfAbsent(id, UInt64(n)) == nil) }
        for id in ids.reversed() { #expect(index.remove(id) != nil) }
        #expect(index.count == 0)
        #expect(ids.allSatisfy { index[$0] == nil })
        #expect(index.insertIfAbsent(ids[0], 5) == nil)
        #expect(index[ids[0]] == 5)
    }
}
