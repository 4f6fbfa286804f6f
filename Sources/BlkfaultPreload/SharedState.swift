// BLKFAULT_SHARED_STATE=FILE: the blkdebug state (the value [set-state] changes) is
// shared by every process of one run (`blkfault run --shared-state`), so a state
// machine can span qemu-img and the programs it starts. The file holds the state as 4
// bytes; each engine call runs under an exclusive lock on it, taking the state first
// and leaving it after. One state for all images, as for one blkdebug node.
import BlkfaultEngine
import Glibc

final class SharedState: Sendable {
    let fd: Int32

    init?(path: String) {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { fatal("BLKFAULT_SHARED_STATE: cannot open '\(path)': " + String(cString: strerror(errno))) }
        self.fd = fd
    }

    /// Locks the file and gives the engine the state in it (none yet: the engine's own).
    func take(into engine: inout ImageEngine) {
        while flock(fd, LOCK_EX) != 0 && errno == EINTR {}
        var value: Int32 = 0
        if withUnsafeMutableBytes(of: &value, { pread(fd, $0.baseAddress, 4, 0) }) == 4 {
            engine.adoptState(value)
        }
    }

    /// Stores the engine's state and unlocks.
    func leave(from engine: ImageEngine) {
        var value = engine.rules.state
        _ = withUnsafeBytes(of: &value) { pwrite(fd, $0.baseAddress, 4, 0) }
        flock(fd, LOCK_UN)
    }
}

/// BLKFAULT_SHARED_STATE, opened once per process (fixed at the first attach).
let sharedState: SharedState? = {
    guard let path = env("BLKFAULT_SHARED_STATE"), !path.isEmpty else { return nil }
    return SharedState(path: path)
}()
