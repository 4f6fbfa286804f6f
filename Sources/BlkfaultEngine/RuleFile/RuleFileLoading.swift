import Glibc

extension RuleFile {
    /// Rule files larger than this are refused (a real one is a few hundred bytes).
    public static let maximumSize = 1 << 20

    /// Reads and parses the rule file at `path`. Errors for a file that cannot be opened
    /// or read (QEMU's texts), a directory, one over `maximumSize`, or a binary file.
    public static func load(path: String) throws(RuleFileError) -> RuleSet {
        try parse(try readFile(path), fileName: path)
    }

    private static func readFile(_ path: String) throws(RuleFileError) -> [UInt8] {
        func failure(_ message: String, hint: String? = nil) -> RuleFileError {
            RuleFileError(fileName: path, line: 0, message: message, hint: hint)
        }
        func describe(_ code: Int32) -> String { String(cString: strerror(code)) }
        let tooLarge = failure("file is larger than 1 MiB", hint: "a blkdebug rule file is a few lines of text")

        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw failure("Could not read blkdebug config file: \(describe(errno))") }
        defer { close(fd) }
        var info = stat()
        if fstat(fd, &info) == 0 {
            if info.st_mode & S_IFMT == S_IFDIR { throw failure("Cannot read config file: \(describe(EISDIR))") }
            if info.st_size > maximumSize { throw tooLarge }
        }
        // Read to end of file rather than trusting st_size: pipes and /dev/stdin report 0.
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count == 0 { return bytes }
            if count < 0 {
                if errno == EINTR { continue }
                throw failure("Cannot read config file: \(describe(errno))")
            }
            bytes += chunk[..<count]
            if bytes.count > maximumSize { throw tooLarge }
        }
    }
}
