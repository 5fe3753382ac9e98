import FoundationEssentials
import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// The dynamic-linking facts of one ELF object, read as the System V gABI ("Object Files" and
/// "Program Loading and Dynamic Linking" chapters) lays them out: the program interpreter from
/// `PT_INTERP` and the `DT_NEEDED`, `DT_RUNPATH`, `DT_RPATH` and `DT_SONAME` entries of the
/// `PT_DYNAMIC` segment, whose strings live in `DT_STRTAB` (a virtual address, mapped to a file
/// offset through the `PT_LOAD` segments).
///
/// Only little-endian files are read (ELFCLASS32 and ELFCLASS64); a big-endian file is
/// `.unsupported`. Anything that does not start with the ELF magic is not an ELF file (`nil`),
/// because scripts and data sit next to binaries in every root filesystem.
public struct ELFFile: Sendable, Equatable {
    public enum Class: Sendable, Equatable {
        case elf32
        case elf64
    }

    public let elfClass: Class
    /// `e_machine` (62 = x86-64, 183 = AArch64); a library of another machine is skipped when
    /// searching, as the dynamic loader does.
    public let machine: UInt16
    /// `e_type`: 1 relocatable, 2 executable, 3 shared object (also PIE executables), 4 core.
    public let type: UInt16
    /// `PT_INTERP`, e.g. "/lib64/ld-linux-x86-64.so.2"; nil for static binaries and libraries.
    public let interpreter: String?
    /// Whether there is a `PT_DYNAMIC` segment (false for static, non-PIE binaries).
    public let isDynamic: Bool
    public let needed: [String]
    /// Colon-separated entries of `DT_RUNPATH`, split, `$ORIGIN` not yet expanded.
    public let runpath: [String]
    /// Colon-separated entries of `DT_RPATH`, split; ignored by the loader when `runpath` is set.
    public let rpath: [String]
    public let soname: String?

    public init(
        elfClass: Class, machine: UInt16, type: UInt16, interpreter: String?, isDynamic: Bool,
        needed: [String], runpath: [String], rpath: [String], soname: String?
    ) {
        self.elfClass = elfClass
        self.machine = machine
        self.type = type
        self.interpreter = interpreter
        self.isDynamic = isDynamic
        self.needed = needed
        self.runpath = runpath
        self.rpath = rpath
        self.soname = soname
    }

    /// Parses an in-memory image. Returns nil when `bytes` is not ELF; throws `.corrupt` when it
    /// is ELF but truncated or inconsistent.
    public static func parse(bytes: [UInt8]) throws -> ELFFile? {
        try parse(ByteArraySource(bytes: bytes, name: "ELF image"))
    }

    /// Parses the file at `path`, reading only the headers and the dynamic segment (not the
    /// whole file). Returns nil when the file is not ELF.
    public static func parse(path: String) throws -> ELFFile? {
        try parse(FileSource(file: try FileDescriptor(path: path, flags: O_RDONLY)))
    }

    static func parse(_ source: some ByteSource) throws -> ELFFile? {
        guard source.size >= 4 else { return nil }
        let magic = try source.read(at: 0, count: 4)
        guard magic == [0x7f, 0x45, 0x4c, 0x46] else { return nil }
        return try Parser(source: source).parse()
    }
}

// MARK: - Byte sources

/// Where the parser's bytes come from. Every read is bounds-checked here, so a header that
/// points past the end of the file becomes `.corrupt` instead of a crash or a huge allocation.
protocol ByteSource {
    var name: String { get }
    var size: UInt64 { get }
    func readUnchecked(at offset: UInt64, count: Int) throws -> [UInt8]
}

extension ByteSource {
    func read(at offset: UInt64, count: UInt64) throws -> [UInt8] {
        let (end, overflow) = offset.addingReportingOverflow(count)
        guard !overflow, end <= size else {
            throw HCOSError(
                .corrupt,
                "\(name): truncated ELF file: needs bytes \(offset)..<\(offset &+ count), has \(size)")
        }
        let bytes = try readUnchecked(at: offset, count: Int(count))
        guard bytes.count == Int(count) else {
            throw HCOSError(
                .corrupt, "\(name): short read at byte \(offset) (file changed while reading?)")
        }
        return bytes
    }
}

struct ByteArraySource: ByteSource {
    let bytes: [UInt8]
    let name: String
    var size: UInt64 { UInt64(bytes.count) }

    func readUnchecked(at offset: UInt64, count: Int) throws -> [UInt8] {
        Array(bytes[Int(offset)..<Int(offset) + count])
    }
}

struct FileSource: ByteSource {
    let file: FileDescriptor
    let size: UInt64
    var name: String { file.path }

    init(file: FileDescriptor) throws {
        self.file = file
        self.size = try file.size()
    }

    func readUnchecked(at offset: UInt64, count: Int) throws -> [UInt8] {
        try file.read(at: offset, count: count)
    }
}

// MARK: - Parser

/// Little-endian field access into a header that was read whole (bounds already checked).
private struct Fields {
    let bytes: [UInt8]

    func u16(_ at: Int) -> UInt16 { UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8 }
    func u32(_ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[at + $1]) << (8 * $1) } }
    func u64(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[at + $1]) << (8 * $1) } }
    /// An address-sized field: 4 bytes in ELFCLASS32, 8 in ELFCLASS64.
    func word(_ at: Int, _ elfClass: ELFFile.Class) -> UInt64 {
        elfClass == .elf64 ? u64(at) : UInt64(u32(at))
    }
}

private struct ProgramHeader {
    let type: UInt32
    let offset: UInt64
    let vaddr: UInt64
    let filesz: UInt64
}

private struct Parser<Source: ByteSource> {
    let source: Source

    // gABI constants.
    static var ptLoad: UInt32 { 1 }
    static var ptDynamic: UInt32 { 2 }
    static var ptInterp: UInt32 { 3 }
    static var dtNull: UInt64 { 0 }
    static var dtNeeded: UInt64 { 1 }
    static var dtStrtab: UInt64 { 5 }
    static var dtStrsz: UInt64 { 10 }
    static var dtSoname: UInt64 { 14 }
    static var dtRpath: UInt64 { 15 }
    static var dtRunpath: UInt64 { 29 }
    /// e_phnum value meaning "the real count is in sh_info of section header 0".
    static var pnXnum: UInt16 { 0xffff }
    /// No sane interpreter path is longer; a bigger PT_INTERP is corruption, not a path.
    static var maxInterpreterLength: UInt64 { 4096 }

    func corrupt(_ message: String) -> HCOSError {
        HCOSError(.corrupt, "\(source.name): \(message)")
    }

    func parse() throws -> ELFFile {
        let ident = Fields(bytes: try source.read(at: 0, count: 16))
        let elfClass: ELFFile.Class
        switch ident.bytes[4] {
        case 1: elfClass = .elf32
        case 2: elfClass = .elf64
        default: throw corrupt("invalid ELF class \(ident.bytes[4])")
        }
        switch ident.bytes[5] {
        case 1: break
        case 2: throw HCOSError(.unsupported, "\(source.name): big-endian ELF files are not supported")
        default: throw corrupt("invalid ELF data encoding \(ident.bytes[5])")
        }

        let is64 = elfClass == .elf64
        let header = Fields(bytes: try source.read(at: 0, count: is64 ? 64 : 52))
        let type = header.u16(16)
        let machine = header.u16(18)
        let phoff = header.word(is64 ? 32 : 28, elfClass)
        let shoff = header.word(is64 ? 40 : 32, elfClass)
        let phentsize = UInt64(header.u16(is64 ? 54 : 42))
        var phnum = UInt64(header.u16(is64 ? 56 : 44))
        if phnum == UInt64(Self.pnXnum) {
            // sh_info of section header 0 (offset 44 in ELF64, 28 in ELF32).
            let info = Fields(bytes: try source.read(at: shoff, count: is64 ? 64 : 40))
            phnum = UInt64(info.u32(is64 ? 44 : 28))
        }

        var programHeaders: [ProgramHeader] = []
        if phnum > 0 {
            let minimum: UInt64 = is64 ? 56 : 32
            guard phentsize >= minimum else {
                throw corrupt("program header entry size \(phentsize) is too small")
            }
            let (tableSize, overflow) = phentsize.multipliedReportingOverflow(by: phnum)
            guard !overflow else { throw corrupt("program header table size overflows") }
            let table = try source.read(at: phoff, count: tableSize)
            for index in 0..<Int(phnum) {
                let entry = Fields(
                    bytes: Array(table[index * Int(phentsize)..<(index + 1) * Int(phentsize)]))
                programHeaders.append(
                    is64
                        ? ProgramHeader(
                            type: entry.u32(0), offset: entry.u64(8), vaddr: entry.u64(16), filesz: entry.u64(32))
                        : ProgramHeader(
                            type: entry.u32(0), offset: UInt64(entry.u32(4)), vaddr: UInt64(entry.u32(8)),
                            filesz: UInt64(entry.u32(16))))
            }
        }

        let interpreter = try readInterpreter(programHeaders)
        let dynamic = programHeaders.first { $0.type == Self.ptDynamic }
        var needed: [String] = []
        var runpath: [String] = []
        var rpath: [String] = []
        var soname: String?
        if let dynamic {
            let entries = try readDynamic(dynamic, elfClass: elfClass)
            let stringOffsets = entries.filter {
                [Self.dtNeeded, Self.dtRunpath, Self.dtRpath, Self.dtSoname].contains($0.tag)
            }
            if !stringOffsets.isEmpty {
                let table = try readStringTable(entries, programHeaders)
                for entry in stringOffsets {
                    let value = try string(in: table, at: entry.value)
                    switch entry.tag {
                    case Self.dtNeeded: needed.append(value)
                    case Self.dtRunpath: runpath += Self.searchList(value)
                    case Self.dtRpath: rpath += Self.searchList(value)
                    default: soname = value
                    }
                }
            }
        }
        return ELFFile(
            elfClass: elfClass, machine: machine, type: type, interpreter: interpreter,
            isDynamic: dynamic != nil,
            needed: needed, runpath: runpath, rpath: rpath, soname: soname)
    }

    static func searchList(_ value: String) -> [String] {
        value.split(separator: ":", omittingEmptySubsequences: true).map(String.init)
    }

    func readInterpreter(_ headers: [ProgramHeader]) throws -> String? {
        guard let interp = headers.first(where: { $0.type == Self.ptInterp }) else { return nil }
        guard interp.filesz > 0, interp.filesz <= Self.maxInterpreterLength else {
            throw corrupt("PT_INTERP has implausible size \(interp.filesz)")
        }
        let bytes = try source.read(at: interp.offset, count: interp.filesz)
        let path = bytes.prefix { $0 != 0 }
        guard !path.isEmpty else { throw corrupt("PT_INTERP is empty") }
        return String(decoding: path, as: UTF8.self)
    }

    func readDynamic(_ segment: ProgramHeader, elfClass: ELFFile.Class) throws -> [(
        tag: UInt64, value: UInt64
    )] {
        let entrySize = elfClass == .elf64 ? 16 : 8
        let bytes = Fields(bytes: try source.read(at: segment.offset, count: segment.filesz))
        var entries: [(tag: UInt64, value: UInt64)] = []
        var at = 0
        while at + entrySize <= bytes.bytes.count {
            let tag = bytes.word(at, elfClass)
            if tag == Self.dtNull { break }
            entries.append((tag, bytes.word(at + entrySize / 2, elfClass)))
            at += entrySize
        }
        return entries
    }

    /// The bytes of the dynamic string table: DT_STRTAB mapped through PT_LOAD, DT_STRSZ long
    /// (or to the end of the containing segment when DT_STRSZ is missing).
    func readStringTable(
        _ entries: [(tag: UInt64, value: UInt64)], _ headers: [ProgramHeader]
    ) throws -> [UInt8] {
        guard let address = entries.first(where: { $0.tag == Self.dtStrtab })?.value else {
            throw corrupt("dynamic section has strings but no DT_STRTAB")
        }
        let segment = headers.first { header in
            header.type == Self.ptLoad && address >= header.vaddr
                && address - header.vaddr < header.filesz
        }
        guard let segment else {
            throw corrupt("DT_STRTAB address 0x\(String(address, radix: 16)) is in no PT_LOAD segment")
        }
        let delta = address - segment.vaddr
        let (offset, overflow) = segment.offset.addingReportingOverflow(delta)
        guard !overflow else { throw corrupt("DT_STRTAB offset overflows") }
        let available = segment.filesz - delta
        let size = entries.first(where: { $0.tag == Self.dtStrsz })?.value ?? available
        return try source.read(at: offset, count: size)
    }

    func string(in table: [UInt8], at offset: UInt64) throws -> String {
        guard offset < UInt64(table.count) else {
            throw corrupt(
                "string offset \(offset) is outside the dynamic string table (\(table.count) bytes)")
        }
        let tail = table[Int(offset)...]
        guard let end = tail.firstIndex(of: 0) else {
            throw corrupt("unterminated string at offset \(offset) of the dynamic string table")
        }
        return String(decoding: tail[..<end], as: UTF8.self)
    }
}
