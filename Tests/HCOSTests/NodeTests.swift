import Foundation
import HCOSCore
import Testing

@testable import Node

@Suite("node-side parsing")
struct NodeTests {
    @Test("mountinfo lines parse, with escaped spaces, and the last mount on a path wins")
    func mountInfoParses() {
        let text = """
            22 1 254:3 / / ro,relatime shared:1 - squashfs /dev/vda3 ro
            30 22 254:5 /etc/upper /etc rw,relatime shared:2 - overlay overlay rw,lowerdir=/sysroot/etc
            31 22 254:5 /var /var rw,noatime shared:3 - ext4 /dev/vda5 rw
            32 22 0:40 / /mnt/a\\040b rw - tmpfs tmpfs rw
            33 22 0:41 / /var rw - tmpfs tmpfs rw
            """
        let mounts = MountInfo.parse(text)
        #expect(mounts.count == 5)
        #expect(MountInfo.at("/", in: mounts)?.readOnly == true)
        #expect(MountInfo.at("/etc", in: mounts)?.fsType == "overlay")
        #expect(MountInfo.at("/mnt/a b", in: mounts)?.source == "tmpfs")
        #expect(MountInfo.at("/var", in: mounts)?.fsType == "tmpfs")
        #expect(MountInfo.at("/persist", in: mounts) == nil)
    }

    @Test("memory in use is total − available, and without page cache as free(1) counts it")
    func memoryFromMeminfo() throws {
        let memory = try BootReport.memory(
            meminfo: """
                MemTotal:        1000000 kB
                MemFree:          600000 kB
                MemAvailable:     800000 kB
                Buffers:           10000 kB
                Cached:           150000 kB
                SReclaimable:      20000 kB
                """)
        #expect(memory.usedKiB == 200_000)
        #expect(memory.usedWithoutCacheKiB == 220_000)
    }

    @Test("the ext4 superblock gives block count and size, 64-bit counts included; other data is refused")
    func ext4Superblock() throws {
        var block = [UInt8](repeating: 0, count: 1024)
        block[0x38] = 0x53
        block[0x39] = 0xEF
        block[0x04] = 0x00
        block[0x05] = 0x00
        block[0x06] = 0x01  // 65536 blocks (low word)
        block[0x18] = 2  // 1024 << 2 = 4096-byte blocks
        block[0x60] = 0x80  // INCOMPAT_64BIT
        block[0x150] = 1  // + 1 << 32 blocks
        let superblock = try Ext4Superblock.parse(block)
        #expect(superblock.blockSize == 4096)
        #expect(superblock.blockCount == (1 << 32) + 65536)
        #expect(throws: HCOSError.self) { _ = try Ext4Superblock.parse([UInt8](repeating: 0, count: 1024)) }
    }

    @Test("only a press of KEY_POWER counts as a power-button event")
    func powerButtonEvents() {
        func event(type: UInt16, code: UInt16, value: Int32) -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: 16)
            bytes += [UInt8(type & 0xff), UInt8(type >> 8), UInt8(code & 0xff), UInt8(code >> 8)]
            let v = UInt32(bitPattern: value)
            bytes += [UInt8(v & 0xff), UInt8((v >> 8) & 0xff), UInt8((v >> 16) & 0xff), UInt8(v >> 24)]
            return bytes
        }
        #expect(PowerButton.isPowerPress(event(type: 1, code: 116, value: 1)))
        #expect(!PowerButton.isPowerPress(event(type: 1, code: 116, value: 0)))
        #expect(!PowerButton.isPowerPress(event(type: 0, code: 0, value: 0)))
        #expect(!PowerButton.isPowerPress(event(type: 1, code: 30, value: 1)))
        #expect(!PowerButton.isPowerPress([1, 2, 3]))
    }
}
