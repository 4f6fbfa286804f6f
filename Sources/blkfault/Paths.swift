import Foundation

enum Paths {
    /// The running binary (resolved through symlinks), from /proc/self/exe.
    static var executable: String {
        if let p = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") { return p }
        return URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.path
    }

    static var executableDirectory: String {
        (executable as NSString).deletingLastPathComponent
    }

    /// `path` made absolute against the current directory (no symlink resolution: globs stay globs).
    static func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        let cwd = FileManager.default.currentDirectoryPath
        var p = path
        while p.hasPrefix("./") { p.removeFirst(2) }
        return cwd == "/" ? "/" + p : cwd + "/" + p
    }

    static func isFile(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && !isDirectory.boolValue
    }

    /// Finds libblkfault.so: `--library`, else $BLKFAULT_LIBRARY, else next to this binary,
    /// else ../lib/ from this binary's directory. Returns an absolute path. Its engine must
    /// sit next to it (unless $BLKFAULT_ENGINE names one): without it the program would be
    /// stopped at its first image, so that is said before it starts.
    static func library(option: String?) throws(BlkfaultError) -> String {
        let library = try shim(option: option)
        if ProcessInfo.processInfo.environment["BLKFAULT_ENGINE"]?.isEmpty ?? true {
            let engine = (library as NSString).deletingLastPathComponent + "/libblkfault-engine.so"
            guard isFile(engine) else { throw .engineMissing(engine: engine, library: library) }
        }
        return library
    }

    private static func shim(option: String?) throws(BlkfaultError) -> String {
        if let option {
            let p = absolute(option)
            guard isFile(p) else { throw .libraryMissing(path: p, from: "--library") }
            return p
        }
        if let env = ProcessInfo.processInfo.environment["BLKFAULT_LIBRARY"], !env.isEmpty {
            let p = absolute(env)
            guard isFile(p) else { throw .libraryMissing(path: p, from: "BLKFAULT_LIBRARY") }
            return p
        }
        let dir = executableDirectory
        let candidates = [
            dir + "/libblkfault.so",
            ((dir as NSString).deletingLastPathComponent as NSString).appendingPathComponent("lib/libblkfault.so"),
        ]
        for c in candidates where isFile(c) { return c }
        throw .libraryNotFound(searched: candidates)
    }

    /// The first executable named `name` in $PATH (or `name` itself if it contains a slash).
    static func which(_ name: String) -> String? {
        if name.contains("/") { return FileManager.default.isExecutableFile(atPath: name) ? name : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":", omittingEmptySubsequences: false) {
            let d = dir.isEmpty ? "." : String(dir)
            let candidate = d + "/" + name
            if isFile(candidate), FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}
