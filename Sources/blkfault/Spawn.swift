import Foundation
import Subprocess
import SystemPackage

/// How a spawned process ended.
enum ProcessEnd: Equatable, Codable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)
    /// Still running after the timeout: its process group was killed.
    case timedOut
    /// Killed because the sweep was interrupted (Ctrl-C): the result means nothing.
    case interrupted

    var description: String {
        switch self {
        case .exited(let c): return "exit \(c)"
        case .signaled(let s): return "signal \(s) (\(Spawn.signalName(s)))"
        case .timedOut: return "timed out"
        case .interrupted: return "interrupted"
        }
    }

    var exitCode: Int32? { if case .exited(let c) = self { return c }; return nil }
}

/// Runs programs for `trace` and `sweep`: in their own process group (so a timeout or Ctrl-C
/// kills everything they started), output to files, with a timeout.
enum Spawn {
    /// Every process group still running, so that an interrupt can kill them all.
    static let running = RunningGroups()

    static func signalName(_ s: Int32) -> String {
        switch s {
        case SIGKILL: return "SIGKILL"
        case SIGSEGV: return "SIGSEGV"
        case SIGABRT: return "SIGABRT"
        case SIGBUS: return "SIGBUS"
        case SIGTERM: return "SIGTERM"
        case SIGINT: return "SIGINT"
        case SIGFPE: return "SIGFPE"
        case SIGILL: return "SIGILL"
        default: return "signal \(s)"
        }
    }

    /// Runs `argv` (PATH lookup for argv[0]) in `directory` with `environment` changes
    /// (nil removes a variable), stdout and stderr appended to the given files (nil: /dev/null).
    static func run(_ argv: [String], in directory: String, environment: [String: String?] = [:],
                    stdout: String?, stderr: String?, timeout: Double?) async throws -> ProcessEnd {
        precondition(!argv.isEmpty)
        let out = try open(stdout)
        let err = try open(stderr)
        var platform = PlatformOptions()
        platform.processGroupID = 0  // a group of its own, led by the child
        let options = platform
        let env = changes(environment)
        let executable = Self.executable(argv[0])
        let pidBox = PidBox()
        return try await withThrowingTaskGroup(of: ProcessEnd?.self) { group in
            group.addTask {
                let result = try await Subprocess.run(
                    executable, arguments: Arguments(Array(argv.dropFirst())),
                    environment: .inherit.updating(env), workingDirectory: FilePath(directory),
                    platformOptions: options, input: .none,
                    output: .fileDescriptor(out, closeAfterSpawningProcess: true),
                    error: .fileDescriptor(err, closeAfterSpawningProcess: true)
                ) { execution in
                    let pid = execution.processIdentifier.value
                    pidBox.set(pid)
                    running.insert(pid)
                }
                pidBox.markExited()
                if let pid = pidBox.get() { running.remove(pid) }
                if pidBox.killedForTimeout { return .timedOut }
                if running.interrupted { return .interrupted }
                switch result.terminationStatus {
                case .exited(let c): return .exited(c)
                case .signaled(let s): return .signaled(s)
                }
            }
            if let timeout {
                group.addTask {
                    try? await Task.sleep(for: .milliseconds(Int(timeout * 1000)))
                    if Task.isCancelled { return nil }
                    pidBox.killForTimeout()
                    return nil
                }
            }
            while let next = try await group.next() {
                if let end = next {
                    group.cancelAll()
                    return end
                }
            }
            return .timedOut
        }
    }

    /// Runs `argv` in the foreground: same stdio, same process group (Ctrl-C reaches it).
    static func runInheritingStdio(_ argv: [String], environment: [String: String?]) async throws -> ProcessEnd {
        let env = changes(environment)
        let executable = Self.executable(argv[0])
        do {
            let result = try await Subprocess.run(
                executable, arguments: Arguments(Array(argv.dropFirst())), environment: .inherit.updating(env),
                input: .fileDescriptor(.standardInput, closeAfterSpawningProcess: false),
                output: .fileDescriptor(.standardOutput, closeAfterSpawningProcess: false),
                error: .fileDescriptor(.standardError, closeAfterSpawningProcess: false))
            switch result.terminationStatus {
            case .exited(let c): return .exited(c)
            case .signaled(let s): return .signaled(s)
            }
        } catch {
            throw BlkfaultError.commandNotFound(argv[0] + " (\(error))")
        }
    }

    /// `sh -c COMMAND`.
    static func shell(_ command: String, in directory: String, environment: [String: String?] = [:],
                      stdout: String?, stderr: String?, timeout: Double?) async throws -> ProcessEnd {
        try await run(["/bin/sh", "-c", command], in: directory, environment: environment,
                      stdout: stdout, stderr: stderr, timeout: timeout)
    }

    /// Environment changes as Subprocess takes them (nil removes a variable).
    private static func changes(_ environment: [String: String?]) -> [Environment.Key: String?] {
        var out: [Environment.Key: String?] = [:]
        for (k, v) in environment { out[Environment.Key(stringLiteral: k)] = v }
        return out
    }

    /// A path if it has a slash, else a name looked up in PATH (as execvp does).
    private static func executable(_ name: String) -> Executable {
        name.contains("/") ? .path(FilePath(name)) : .name(name)
    }

    private static func open(_ path: String?) throws -> FileDescriptor {
        try FileDescriptor.open(FilePath(path ?? "/dev/null"), .writeOnly,
                                options: path == nil ? [] : [.create, .append],
                                permissions: [.ownerReadWrite, .groupRead, .otherRead])
    }
}

/// The child's pid once it is known, and whether the timeout killed it.
final class PidBox: @unchecked Sendable {
    private let lock = NSLock()
    private var pid: pid_t?
    private var exited = false
    private(set) var killedForTimeout = false

    func set(_ p: pid_t) { lock.withLock { pid = p } }
    func get() -> pid_t? { lock.withLock { pid } }
    func markExited() { lock.withLock { exited = true } }

    func killForTimeout() {
        lock.withLock {
            guard let pid, !exited else { return }
            killedForTimeout = true
            kill(-pid, SIGKILL)
        }
    }
}

/// Process groups of running children; `interruptAll` kills them (Ctrl-C).
final class RunningGroups: @unchecked Sendable {
    private let lock = NSLock()
    private var groups: Set<pid_t> = []
    private(set) var interrupted = false

    func insert(_ pid: pid_t) {
        lock.withLock {
            groups.insert(pid)
            if interrupted { kill(-pid, SIGKILL) }
        }
    }

    func remove(_ pid: pid_t) { lock.withLock { _ = groups.remove(pid) } }

    func interruptAll() {
        lock.withLock {
            interrupted = true
            for g in groups { kill(-g, SIGKILL) }
        }
    }
}
