import DroverProtocol

/// The broker's index from ``ItemID`` to a 64-bit value (where the id is: a held item's slot,
/// or its place among recent completions).
///
/// Why two tiers: a producer numbers its items, so nearly every id is `(run, n)` for one run and
/// consecutive `n`, and the broker meets them in about that order. Such ids live in *pages*: one
/// page holds the values of the 64 ids `(run, 64k) … (run, 64k + 63)` side by side, 8 bytes
/// each, found through a small hash table of pages. Consecutive ids then share cache lines
/// (8 values per line, read in order), where a hash table spreads 24-byte entries over the
/// whole table and misses the cache on most of them; a large table's misses were a fifth of
/// the broker's time. Any other id goes to an ``IDHashTable``.
///
/// Invariant: an id is in its page if that page exists, else in the hash table. A page is made
/// when an id at the start of one arrives (`n` a multiple of 64) or the page before exists, so
/// a numbered run fills pages from its second page on; ids already in the hash table move into
/// a page made for them. A page is freed when its last id goes. Pages are made only while they
/// are on average at least a quarter full, so ids that happen to be multiples of 64 cannot make
/// the index spend 512 bytes on each.
///
/// Positions (from ``find(_:)``) stay valid until the id is removed, except that those of
/// ids in the hash table change when it grows (``growths`` counts that).
struct ItemIndex: Sendable {
    private struct Page {
        var high: UInt64
        var number: UInt64
        var live: Int
    }

    static let pageSize = 64
    private static let empty = UInt64.max
    /// Set in a position that is in a page.
    private static let pagedFlag = 1 << 62

    private var table: IDHashTable
    /// Page number → page index.
    private var pageTable: IDHashTable
    private var pages: [Page] = []
    /// Values of every page, page index × 64 + the id's last 6 bits; `empty` where none.
    private var values: [UInt64] = []
    private var freePages: [Int] = []
    private var pagedCount = 0
    /// The page last looked up by a mutating call, and its key: the broker meets ids in runs
    /// (a batch, a worker's outcomes), so most lookups need not ask the table of pages.
    private var cachedKey = ItemID(high: 0, low: UInt64.max)
    private var cachedPage = 0

    init(seed: UInt64 = UInt64.random(in: 0...UInt64.max)) {
        table = IDHashTable(seed: seed)
        pageTable = IDHashTable(seed: seed &* 0x9E37_79B9_7F4A_7C15)
    }

    var count: Int { pagedCount + table.count }
    var growths: UInt32 { table.growths }
    /// Pages in use (for tests).
    var pageCount: Int { pages.count - freePages.count }

    private static func pageKey(_ id: ItemID) -> ItemID { ItemID(high: id.high, low: id.low >> 6) }

    /// Where `id` is, if present: pass the position to ``value(at:)``, ``setValue(_:at:)`` or
    /// ``remove(at:)`` before changing the index in any other way.
    func find(_ id: ItemID) -> Int? {
        if let page = page(of: id) {
            let position = page << 6 | Int(id.low & 63)
            return values[position] == Self.empty ? nil : Self.pagedFlag | position
        }
        return table.find(id)
    }

    /// ``find(_:)``, remembering the page for the next lookup.
    mutating func locate(_ id: ItemID) -> Int? {
        if pagedCount > 0 { _ = cachingPage(of: id) }
        return find(id)
    }

    /// The page `id` belongs in, if it exists.
    private func page(of id: ItemID) -> Int? {
        guard pagedCount > 0 else { return nil }
        let key = Self.pageKey(id)
        if key == cachedKey { return cachedPage }
        return pageTable[key].map(Int.init)
    }

    private mutating func cachingPage(of id: ItemID) -> Int? {
        let key = Self.pageKey(id)
        if key == cachedKey { return cachedPage }
        guard let page = pageTable[key].map(Int.init) else { return nil }
        (cachedKey, cachedPage) = (key, page)
        return page
    }

    subscript(id: ItemID) -> UInt64? { find(id).map { value(at: $0) } }

    func value(at position: Int) -> UInt64 {
        position & Self.pagedFlag != 0 ? values[position & ~Self.pagedFlag] : table.value(at: position)
    }

    mutating func setValue(_ value: UInt64, at position: Int) {
        precondition(value != Self.empty)
        if position & Self.pagedFlag != 0 { values[position & ~Self.pagedFlag] = value } else { table.setValue(value, at: position) }
    }

    /// Stores `value` for `id` unless `id` is present; returns the present value, or `nil`
    /// when it was stored.
    mutating func insertIfAbsent(_ id: ItemID, _ value: UInt64) -> UInt64? {
        precondition(value != Self.empty)
        var page = pagedCount > 0 ? cachingPage(of: id) : nil
        if page == nil {
            if let present = table[id] { return present }
            guard startsPage(id) else { return table.insertIfAbsent(id, value) }
            page = makePage(Self.pageKey(id))
        }
        let position = page! << 6 | Int(id.low & 63)
        if values[position] != Self.empty { return values[position] }
        values[position] = value
        pages[page!].live += 1
        pagedCount += 1
        return nil
    }

    /// Removes `id`; returns its value.
    @discardableResult
    mutating func remove(_ id: ItemID) -> UInt64? {
        guard let position = find(id) else { return nil }
        let value = value(at: position)
        remove(at: position, id: id)
        return value
    }

    /// Removes the id at `position` (from ``find(_:)``).
    mutating func remove(at position: Int) {
        if position & Self.pagedFlag != 0 { removePaged(position & ~Self.pagedFlag) } else { table.remove(at: position) }
    }

    /// Removes `id`, which is at `position`, without reading the hash table's entry (see
    /// ``IDHashTable/remove(at:id:)``).
    mutating func remove(at position: Int, id: ItemID) {
        if position & Self.pagedFlag != 0 { removePaged(position & ~Self.pagedFlag) } else { table.remove(at: position, id: id) }
    }

    // MARK: Pages

    /// Whether a page should be made for `id`, whose page does not exist.
    private func startsPage(_ id: ItemID) -> Bool {
        let number = id.low >> 6
        guard id.low & 63 == 0 || (number > 0 && pagedCount > 0 && pageTable[ItemID(high: id.high, low: number - 1)] != nil) else {
            return false
        }
        // On average at least a quarter full (always allowed for the first 16).
        return pageCount < 16 || pageCount * Self.pageSize <= 4 * pagedCount
    }

    /// Makes the page for `key`, moving in any of its ids that are in the hash table.
    private mutating func makePage(_ key: ItemID) -> Int {
        let page: Int
        if let reused = freePages.popLast() {
            page = reused
            pages[page] = Page(high: key.high, number: key.low, live: 0)
        } else {
            page = pages.count
            pages.append(Page(high: key.high, number: key.low, live: 0))
            values.append(contentsOf: repeatElement(Self.empty, count: Self.pageSize))
        }
        _ = pageTable.insertIfAbsent(key, UInt64(page))
        if !table.isEmpty {
            for offset in 0..<UInt64(Self.pageSize) {
                let id = ItemID(high: key.high, low: key.low << 6 | offset)
                guard let position = table.find(id) else { continue }
                values[page << 6 | Int(offset)] = table.value(at: position)
                table.remove(at: position, id: id)
                pages[page].live += 1
                pagedCount += 1
            }
        }
        return page
    }

    private mutating func removePaged(_ position: Int) {
        precondition(values[position] != Self.empty)
        values[position] = Self.empty
        let page = position >> 6
        pages[page].live -= 1
        pagedCount -= 1
        if pages[page].live == 0 {
            let key = ItemID(high: pages[page].high, low: pages[page].number)
            pageTable.remove(key)
            freePages.append(page)
            if key == cachedKey { cachedKey = ItemID(high: 0, low: UInt64.max) }
        }
    }
}
