import HCOSCore

/// One of the two root slots.
public enum Slot: String, CaseIterable, Sendable {
    case a = "A"
    case b = "B"

    public var other: Slot { self == .a ? .b : .a }
}

/// The A/B boot state kept in the GRUB environment, the one thing grub.cfg reads:
/// `ORDER="A B"` (boot order), `A_OK`/`B_OK` ("1" = known good), `A_TRY`/`B_TRY` ("0"..."3",
/// tries left for a slot that is not yet good), `hcos_cmdline` (extra kernel command line), and
/// the markers `HCOS_ENV=1` and `HCOS_COPY=1|2` (which of the two copies a block is).
public struct SlotState: Equatable, Sendable {
    public struct SlotInfo: Equatable, Sendable {
        public var good: Bool
        public var triesLeft: Int

        public init(good: Bool, triesLeft: Int) {
            self.good = good
            self.triesLeft = triesLeft
        }
    }

    public static let maxTries = 3

    public var order: [Slot]
    public var a: SlotInfo
    public var b: SlotInfo
    public var extraCommandLine: String
    /// Variables hcos does not own, kept as they were (in order).
    public var otherVariables: [GrubEnvBlock.Variable]

    public init(
        order: [Slot], a: SlotInfo, b: SlotInfo, extraCommandLine: String = "",
        otherVariables: [GrubEnvBlock.Variable] = []
    ) {
        self.order = order
        self.a = a
        self.b = b
        self.extraCommandLine = extraCommandLine
        self.otherVariables = otherVariables
    }

    /// A new disk: slot A good and first, slot B empty (not good, no tries).
    public static let fresh = SlotState(
        order: [.a, .b], a: SlotInfo(good: true, triesLeft: 0), b: SlotInfo(good: false, triesLeft: 0))

    public subscript(slot: Slot) -> SlotInfo {
        get { slot == .a ? a : b }
        set {
            if slot == .a { a = newValue } else { b = newValue }
        }
    }

    static let owned: Set<String> = [
        "ORDER", "A_OK", "B_OK", "A_TRY", "B_TRY", "hcos_cmdline", "HCOS_ENV", "HCOS_COPY",
    ]

    public func validate() throws {
        guard order.count == 2 && Set(order) == Set(Slot.allCases) else {
            throw HCOSError(
                .invalidArgument,
                "slot order must be a permutation of A and B, not \(order.map(\.rawValue))")
        }
        for slot in Slot.allCases where !(0...SlotState.maxTries).contains(self[slot].triesLeft) {
            throw HCOSError(
                .invalidArgument,
                "slot \(slot.rawValue) tries must be 0...\(SlotState.maxTries), not \(self[slot].triesLeft)"
            )
        }
        if extraCommandLine.contains("\n") {
            throw HCOSError(.invalidArgument, "the extra kernel command line must be one line")
        }
    }

    /// Reads the state from a block; `.corrupt` if a variable is missing or out of range.
    public init(block: GrubEnvBlock) throws {
        func required(_ name: String) throws -> String {
            guard let value = block[name] else {
                throw HCOSError(.corrupt, "GRUB environment has no \(name)")
            }
            return value
        }
        func flag(_ name: String) throws -> Bool {
            switch try required(name) {
            case "1": return true
            case "0": return false
            case let other: throw HCOSError(.corrupt, "GRUB environment \(name)='\(other)' is not 0 or 1")
            }
        }
        func tries(_ name: String) throws -> Int {
            let text = try required(name)
            guard let value = Int(text), (0...SlotState.maxTries).contains(value) else {
                throw HCOSError(
                    .corrupt, "GRUB environment \(name)='\(text)' is not 0...\(SlotState.maxTries)")
            }
            return value
        }
        guard block["HCOS_ENV"] == "1" else {
            throw HCOSError(.corrupt, "GRUB environment is not an hcos one (no HCOS_ENV=1)")
        }
        let orderText = try required("ORDER")
        let order = orderText.split(separator: " ").compactMap { Slot(rawValue: String($0)) }
        self.init(
            order: order, a: SlotInfo(good: try flag("A_OK"), triesLeft: try tries("A_TRY")),
            b: SlotInfo(good: try flag("B_OK"), triesLeft: try tries("B_TRY")),
            extraCommandLine: block["hcos_cmdline"] ?? "",
            otherVariables: block.variables.filter { !SlotState.owned.contains($0.name) })
        guard order.count == 2 && Set(order).count == 2 && orderText.split(separator: " ").count == 2
        else {
            throw HCOSError(
                .corrupt, "GRUB environment ORDER='\(orderText)' is not a permutation of A and B")
        }
    }

    /// The block for copy 1 or 2 of the environment.
    public func block(copy: Int) throws -> GrubEnvBlock {
        try validate()
        guard copy == 1 || copy == 2 else {
            throw HCOSError(.invalidArgument, "copy must be 1 or 2, not \(copy)")
        }
        var block = GrubEnvBlock()
        block["HCOS_ENV"] = "1"
        block["HCOS_COPY"] = String(copy)
        block["ORDER"] = order.map(\.rawValue).joined(separator: " ")
        for slot in Slot.allCases {
            block["\(slot.rawValue)_OK"] = self[slot].good ? "1" : "0"
            block["\(slot.rawValue)_TRY"] = String(self[slot].triesLeft)
        }
        block["hcos_cmdline"] = extraCommandLine
        for variable in otherVariables { block[variable.name] = variable.value }
        return block
    }
}
