import ArgumentParser
import Foundation

/// `blkfault`: run programs under libblkfault.so, check rule files, list events, map qcow2 images.
@main
struct Blkfault: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "blkfault",
        abstract: "QEMU's blkdebug fault injection for unmodified programs (LD_PRELOAD).",
        discussion: """
            Rule files use QEMU blkdebug's format ([inject-error] and [set-state] sections), plus \
            blkfault's [crash], [torn-write], [corrupt] and [break] (see `blkfault validate --syntax`). \
            libblkfault.so reads BLKFAULT_CONFIG (the rule file), BLKFAULT_IMAGE (':'-separated globs \
            of image paths; unset: every qcow2 file), BLKFAULT_TRACE (a trace file, JSON lines), \
            BLKFAULT_MODEL (qemu-7.2, the default, or raw), BLKFAULT_AIO (report: only warn about \
            linux-aio requests on images instead of performing them) and BLKFAULT_ALLOCATED_SIZE \
            (length: a target's st_blocks at least its length, as QEMU sees it over blkdebug). At the first image a program \
            opens, libblkfault.so loads its engine, libblkfault-engine.so, from its own directory \
            (BLKFAULT_ENGINE: another path).
            """,
        subcommands: [Run.self, Validate.self, Events.self, Map.self, Demo.self, DoctorCommand.self, Trace.self,
                      Sweep.self, WaitBreak.self, Resume.self]
    )

    /// Runs the command; our own errors print as `blkfault: ...` with their exit status.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var async = command as? AsyncParsableCommand {
                try await async.run()
            } else {
                try command.run()
            }
        } catch let error as BlkfaultError {
            printError(error.description)
            Foundation.exit(error.exitCode)
        } catch {
            exit(withError: error)
        }
    }
}

/// Everything that can go wrong, with the message the user sees.
enum BlkfaultError: Error, CustomStringConvertible {
    /// A rule file problem, already formatted `FILE:LINE: message`.
    case rules(String)
    /// `--library` or $BLKFAULT_LIBRARY names a file that does not exist.
    case libraryMissing(path: String, from: String)
    /// No libblkfault.so in any of the places looked at.
    case libraryNotFound(searched: [String])
    /// libblkfault.so without the libblkfault-engine.so it loads from its own directory.
    case engineMissing(engine: String, library: String)
    case noCommand
    case commandNotFound(String)
    case cannotExecute(String, String)
    case cannotOpen(String, String)
    case cannotRead(String, String)
    case notQcow2(String, String)
    case missingTool(String)
    case demo(String)
    case sweep(String)

    var description: String {
        let message: String
        switch self {
        case .rules(let m): message = m
        case .libraryMissing(let path, let from): message = "\(path) (from \(from)): no such file"
        case .libraryNotFound(let searched):
            message = "libblkfault.so not found (looked at \(searched.joined(separator: ", "))); "
                + "build it with `swift build`, or pass --library PATH or set BLKFAULT_LIBRARY"
        case .engineMissing(let engine, let library):
            message = "\(engine) not found: \(library) loads it from its own directory at the first image a program opens "
                + "(`swift build` makes both; or set BLKFAULT_ENGINE to its path)"
        case .noCommand: message = "no command given (usage: blkfault run -c RULES -- CMD ARGS...)"
        case .commandNotFound(let c): message = "\(c): command not found"
        case .cannotExecute(let c, let why): message = "\(c): cannot execute: \(why)"
        case .cannotOpen(let f, let why): message = "\(f): cannot open: \(why)"
        case .cannotRead(let f, let why): message = "\(f): read error: \(why)"
        case .notQcow2(let f, let why): message = "\(f): not a usable qcow2 image: \(why)"
        case .missingTool(let t): message = "\(t) not found in PATH: install qemu-utils (apt-get install -y qemu-utils)"
        case .demo(let m): message = "demo: \(m)"
        case .sweep(let m): message = "sweep: \(m)"
        }
        return "blkfault: " + message
    }

    var exitCode: Int32 {
        switch self {
        case .commandNotFound: return 127
        case .cannotExecute: return 126
        default: return 1
        }
    }
}

func printError(_ s: String) {
    FileHandle.standardError.write(Data((s + "\n").utf8))
}

/// Standard output, flushed line by line so that output interleaves with child processes.
func say(_ s: String = "") {
    print(s)
    fflush(nil)
}
