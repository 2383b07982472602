import DroverProtocol
import Testing
@testable import DroverDispatch

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
                if let position = step % 2 == 0 ? index.find(id) : index.locate(id) {
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

@Suite("ItemIndex pages: numbered ids side by side")
struct ItemIndexPageTests {
    @Test("a numbered run lives in pages, which are freed as its ids go")
    func numberedRun() {
        var index = ItemIndex(seed: 3)
        for n in 0..<10_000 as Range<UInt64> { #expect(index.insertIfAbsent(ItemID(high: 9, low: n), n) == nil) }
        #expect(index.pageCount == 10_000 / 64 + 1)
        #expect(index.insertIfAbsent(ItemID(high: 9, low: 5), 1) == 5)  // present: not replaced
        for n in 0..<9_000 as Range<UInt64> { #expect(index.remove(ItemID(high: 9, low: n)) == n) }
        #expect(index.count == 1_000)
        #expect(index.pageCount == 9_999 / 64 - 9_000 / 64 + 1)
        #expect((9_000..<10_000 as Range<UInt64>).allSatisfy { index[ItemID(high: 9, low: $0)] == $0 })
        #expect(index[ItemID(high: 9, low: 8_999)] == nil)
    }

    @Test("ids stored before their page existed move into it, and are still found and removed")
    func migration() {
        var index = ItemIndex(seed: 4)
        // 70..<80 have no page (70 is not a multiple of 64 and page 0 does not exist).
        for n in 70..<80 as Range<UInt64> { #expect(index.insertIfAbsent(ItemID(high: 1, low: n), n) == nil) }
        #expect(index.pageCount == 0)
        // 0 starts page 0, 64 then starts page 1, which takes in 70..<80.
        #expect(index.insertIfAbsent(ItemID(high: 1, low: 0), 0) == nil)
        #expect(index.insertIfAbsent(ItemID(high: 1, low: 64), 64) == nil)
        #expect(index.pageCount == 2)
        #expect(index.count == 12)
        #expect(index.insertIfAbsent(ItemID(high: 1, low: 75), 0) == 75)
        for n in 70..<80 as Range<UInt64> { #expect(index.remove(ItemID(high: 1, low: n)) == n) }
        #expect(index.count == 2)
    }

    @Test("ids 64 apart do not get a page each")
    func sparseIDs() {
        var index = ItemIndex(seed: 5)
        for k in 0..<10_000 as Range<UInt64> { #expect(index.insertIfAbsent(ItemID(high: 2, low: k * 64), k) == nil) }
        #expect(index.pageCount <= 16)
        #expect((0..<10_000 as Range<UInt64>).allSatisfy { index[ItemID(high: 2, low: $0 * 64)] == $0 })
    }

    @Test("a position from find stays valid while its id is present, in a page and in the hash table")
    func stablePositions() {
        var index = ItemIndex(seed: 6)
        let paged = ItemID(high: 3, low: 128), loose = ItemID(high: 3, low: 1_000_003)
        _ = index.insertIfAbsent(paged, 1)
        _ = index.insertIfAbsent(loose, 2)
        let p = index.find(paged)!, l = index.find(loose)!
        for n in 129..<1_000 as Range<UInt64> { _ = index.insertIfAbsent(ItemID(high: 3, low: n), n) }
        #expect(index.value(at: p) == 1)
        index.remove(at: p, id: paged)
        #expect(index[paged] == nil)
        if index.growths == 0 { #expect(index.value(at: l) == 2) }
        #expect(index[loose] == 2)
    }
}
