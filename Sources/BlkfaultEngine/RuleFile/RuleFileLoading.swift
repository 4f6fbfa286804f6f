import Glibc

extension RuleFile {
    /// Reads and parses the rule file at `path`. Errors for a file that cannot be opened
    /// or read (QEMU's texts) or a directory. Any size is read, as QEMU does (100 MB of
    /// comments parse in well under a second in a release build); the file is held in
    /// memory once, its lines are not.
    public static func load(path: String) throws(RuleFileError) -> RuleSet {
        try parse(try readFile(path), fileName: path)
    }

    /// `load` with `parseWithWarnings`.
    public static func loadWithWarnings(path: String) throws(RuleFileError) -> (rules: RuleSet, warnings: [RuleFileWarning]) {
        try parseWithWarnings(try readFile(path), fileName: path)
    }

    private static func readFile(_ path: String) throws(RuleFileError) -> [UInt8] {
        func failure(_ message: String, hint: String? = nil) -> RuleFileError {
            RuleFileError(fileName: path, line: 0, message: message, hint: hint)
        }
        func describe(_ code: Int32) -> String { String(cString: strerror(code)) }

        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw failure("Could not read blkdebug config file: \(describe(errno))") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var info = stat()
        if fstat(fd, &info) == 0 {
            if info.st_mode & S_IFMT == S_IFDIR { throw failure("Cannot read config file: \(describe(EISDIR))") }
            if info.st_size > 0 { bytes.reserveCapacity(Int(min(info.st_size, 256 << 20))) }
        }
        // Read to end of file rather than trusting st_size: pipes and /dev/stdin report 0.
        // The chunk is not zero-filled (64 KiB of it cost every matched process ~65,000
        // instructions) and is no bigger than the file needs.
        let size = info.st_size > 0 ? min(Int(info.st_size) + 1, 64 * 1024) : 64 * 1024
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 1)
        defer { chunk.deallocate() }
        while true {
            let count = read(fd, chunk.baseAddress, chunk.count)
            if count == 0 { return bytes }
            if count < 0 {
                if errno == EINTR { continue }
                throw failure("Cannot read config file: \(describe(errno))")
            }
            bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: chunk[..<count]))
        }
    }
}
