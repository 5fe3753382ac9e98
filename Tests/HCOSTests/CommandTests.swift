import Foundation
import HCOSCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("subprocesses")
struct CommandTests {
    @Test("a child sees only stdin, stdout and stderr, even when this process holds inheritable descriptors")
    func childInheritsOnlyStandardDescriptors() throws {
        // Descriptors without O_CLOEXEC, as a test runner or a library may leave them.
        var pipeEnds: [Int32] = [-1, -1]
        #expect(pipe(&pipeEnds) == 0)
        let file = open("/dev/null", O_RDONLY)
        #expect(file >= 0)
        defer {
            close(pipeEnds[0])
            close(pipeEnds[1])
            close(file)
        }
        let inherited = [pipeEnds[0], pipeEnds[1], file].map(String.init)
        let script = #"for fd in 0 1 2 "$@"; do [ -e /proc/$$/fd/$fd ] && echo $fd; done; true"#
        let result = try Command("sh", ["-c", script, "sh"] + inherited).run()
        #expect(result.output.split(separator: "\n") == ["0", "1", "2"], "\(result.output)")
    }
}
