import FoundationEssentials
import GrubEnv
import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// The A/B boot state in the GRUB environment on the EFI partition, changed only through the
/// transitions of DESIGN §3. Each save rewrites copy 1, fsync, then copy 2, fsync.
public final class BootControl: @unchecked Sendable {
    let store: GrubEnvStore

    public init(esp: PartitionRef) throws {
        let file = try FileDescriptor(path: esp.path, flags: O_RDWR)
        store = try GrubEnvStore(file: file, region: esp.offset..<(esp.offset + esp.size))
    }

    public func load() throws -> SlotState { try store.load().state }

    func update(_ change: (inout SlotState) throws -> Void) throws {
        var state = try load()
        try change(&state)
        try store.save(state)
    }

    /// Neither good nor with tries: GRUB never picks it. First step before a slot is written.
    public func markUnbootable(_ slot: Slot) throws {
        try update { state in
            state[slot] = .init(good: false, triesLeft: 0)
            state.order = [slot.other, slot]
        }
    }

    /// A written, verified slot gets `tries` boot attempts and goes first; GRUB decrements the
    /// tries before each attempt, so a slot that never commits falls back by itself.
    public func arm(_ slot: Slot, tries: Int) throws {
        guard (1...SlotState.maxTries).contains(tries) else {
            throw HCOSError(.invalidArgument, "tries must be 1...\(SlotState.maxTries), not \(tries)")
        }
        try update { state in
            state[slot] = .init(good: false, triesLeft: tries)
            state.order = [slot, slot.other]
        }
    }

    /// The slot passed its health gate: good and the default.
    public func commit(_ slot: Slot) throws {
        try update { state in
            state[slot] = .init(good: true, triesLeft: 0)
            state.order = [slot, slot.other]
        }
    }

    /// Makes a known-valid slot the default again (rollback); the other slot stays as it is.
    public func makeDefault(_ slot: Slot) throws {
        try update { state in
            state[slot] = .init(good: true, triesLeft: 0)
            state.order = [slot, slot.other]
        }
    }
}
