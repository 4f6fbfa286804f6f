// [break]: the thread raising the event stops until `blkfault resume TAG`. Each stopped
// thread listens on its own Unix socket, DIR/TAG.PID.TID, where DIR is BLKFAULT_CONTROL
// (default /tmp/blkfault-control-UID); `blkfault wait-break` waits for such a socket to
// appear and `blkfault resume` connects and says "resume". One line per message.
import BlkfaultEngine
import Glibc
import CPreloadSupport

func controlDirectory() -> String {
    if let dir = env("BLKFAULT_CONTROL"), !dir.isEmpty { return dir }
    return "/tmp/blkfault-control-\(getuid())"
}

func stopAtBreak(tag: String, image: TrackedImage) {
    let dir = controlDirectory()
    let tid = blkfault_current_tid()
    let path = "\(dir)/\(tag).\(getpid()).\(tid)"
    func giveUp(_ why: String) {
        writeAll(2, "blkfault: break '\(tag)': \(why); not stopping\n")
        note(image, "\"break\":" + TraceLine.quote(tag) + ",\"note\":" + TraceLine.quote(why + "; not stopping"))
    }
    if mkdir(dir, 0o700) != 0 && errno != EEXIST { return giveUp("cannot create \(dir): " + String(cString: strerror(errno))) }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return giveUp("socket path too long: \(path)") }
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        for (i, b) in bytes.enumerated() { raw[i] = b }
        raw[bytes.count] = 0
    }
    let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard listener >= 0 else { return giveUp("socket: " + String(cString: strerror(errno))) }
    defer { close(listener) }
    unlink(path)
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard bound == 0, listen(listener, 4) == 0 else { return giveUp("cannot listen on \(path): " + String(cString: strerror(errno))) }
    defer { unlink(path) }
    writeAll(2, "blkfault: suspended at break '\(tag)' (pid \(getpid()), thread \(tid)); blkfault resume \(tag)\n")
    note(image, "\"break\":" + TraceLine.quote(tag) + ",\"socket\":" + TraceLine.quote(path) + ",\"note\":\"stopped\"")
    while true {
        let client = accept(listener, nil, nil)
        if client < 0 { if errno == EINTR { continue }; return giveUp("accept: " + String(cString: strerror(errno))) }
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = buffer.withUnsafeMutableBytes { read(client, $0.baseAddress, 64) }
        let command = n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : ""
        if command.hasPrefix("resume") {
            writeAll(client, "resumed \(tag) \(getpid()) \(tid)\n")
            close(client)
            break
        }
        writeAll(client, "stopped \(tag) \(getpid()) \(tid)\n")
        close(client)
    }
    note(image, "\"break\":" + TraceLine.quote(tag) + ",\"note\":\"resumed\"")
}
