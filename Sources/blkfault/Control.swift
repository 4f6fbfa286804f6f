import ArgumentParser
import Foundation

// `blkfault wait-break TAG` and `blkfault resume TAG`: the other end of [break]. A thread
// stopped at a break listens on DIR/TAG.PID.TID (DIR: --control, else $BLKFAULT_CONTROL,
// else /tmp/blkfault-control-UID); a line "resume" releases it, anything else gets
// "stopped TAG PID TID" back.

struct ControlOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The control directory (default: $BLKFAULT_CONTROL, else /tmp/blkfault-control-UID).", valueName: "DIR"))
    var control: String?

    @Option(help: ArgumentHelp("Give up after this many seconds (0: wait forever).", valueName: "SECONDS"))
    var timeout: Double = 0

    var directory: String {
        if let control { return control }
        if let dir = ProcessInfo.processInfo.environment["BLKFAULT_CONTROL"], !dir.isEmpty { return dir }
        return "/tmp/blkfault-control-\(getuid())"
    }

    /// The sockets of threads stopped at `tag` that answer.
    func stopped(_ tag: String) -> [(path: String, reply: String)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasPrefix(tag + ".") && $0.dropFirst(tag.count + 1).split(separator: ".").count == 2 }
            .sorted()
            .compactMap { name in
                let path = directory + "/" + name
                return ControlSocket.send("status\n", to: path).map { (path, $0) }
            }
    }

    /// Polls until `tag` has a stopped thread; nil on timeout.
    func waitFor(_ tag: String) -> [(path: String, reply: String)]? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let found = stopped(tag)
            if !found.isEmpty { return found }
            if timeout > 0 && Date() >= deadline { return nil }
            usleep(10_000)
        }
    }
}

enum ControlSocket {
    /// Connects, sends `message`, returns the reply line; nil if nobody listens.
    static func send(_ message: String, to path: String) -> String? {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
            raw[bytes.count] = 0
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { return nil }
        _ = message.withCString { write(fd, $0, strlen($0)) }
        var reply = [UInt8](repeating: 0, count: 128)
        let n = reply.withUnsafeMutableBytes { read(fd, $0.baseAddress, 128) }
        return n > 0 ? String(decoding: reply[0..<n], as: UTF8.self).trimmingCharacters(in: .newlines) : ""
    }
}

/// `blkfault wait-break TAG`: like qemu-io's wait_break.
struct WaitBreak: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wait-break",
        abstract: "Wait until a thread is stopped at a [break] with this tag.",
        discussion: "Prints 'stopped TAG PID TID' for each such thread. Exit status 1 on timeout."
    )

    @Argument(help: "The break's tag.") var tag: String
    @OptionGroup var options: ControlOptions

    func run() throws {
        guard let found = options.waitFor(tag) else {
            printError("no thread stopped at break '\(tag)' within \(options.timeout) s (control directory \(options.directory))")
            throw ExitCode(1)
        }
        for f in found { say(f.reply) }
    }
}

/// `blkfault resume TAG`: like qemu-io's resume.
struct Resume: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Resume the threads stopped at a [break] with this tag.",
        discussion: "Without --timeout, fails at once (exit 1) when no thread is stopped there; with it, waits that long for one."
    )

    @Argument(help: "The break's tag.") var tag: String
    @OptionGroup var options: ControlOptions

    func run() throws {
        let found = options.timeout > 0 ? (options.waitFor(tag) ?? []) : options.stopped(tag)
        guard !found.isEmpty else {
            printError("no thread stopped at break '\(tag)' (control directory \(options.directory))")
            throw ExitCode(1)
        }
        for f in found {
            if let reply = ControlSocket.send("resume\n", to: f.path) { say(reply) }
        }
    }
}
